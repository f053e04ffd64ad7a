"""Tests of slmctl.testing.tiny_gguf: the synthetic models are reproducible and run on llama.cpp."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import pytest

from slmctl.formats.gguf_info import inspect_gguf
from slmctl.testing.tiny_gguf import (
    CHATML_TEMPLATE,
    TinyGGUFSpec,
    write_bench_gguf,
    write_tiny_gguf,
    write_tiny_split_gguf,
)

PRINTABLE_ASCII = {chr(c) for c in range(0x20, 0x7F)}


def _tokens(path: Path) -> list[str]:
    field = gguf.GGUFReader(path).fields["tokenizer.ggml.tokens"]
    return [str(field.contents(i)) for i in range(len(field.data))]


def test_same_spec_writes_identical_bytes(tmp_path: Path) -> None:
    first = write_tiny_gguf(tmp_path / "a.gguf").read_bytes()
    second = write_tiny_gguf(tmp_path / "b.gguf").read_bytes()
    other_seed = write_tiny_gguf(tmp_path / "c.gguf", TinyGGUFSpec(seed=1)).read_bytes()
    assert first == second
    assert first != other_seed
    assert len(first) < 1_000_000


def test_vocabulary_is_unique_and_prefix_closed(tiny_gguf: Path) -> None:
    tokens = _tokens(tiny_gguf)
    assert len(set(tokens)) == len(tokens)
    assert tokens[:5] == ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    assert {f"<0x{b:02X}>" for b in range(256)} <= set(tokens)
    assert {"\u2581hello", "\u2581hell", "\u2581he", "\u2581h"} <= set(tokens)
    words = [t for t in tokens if t.startswith("\u2581") and len(t) > 2]
    assert all(word[:-1] in tokens for word in words)


def test_padded_vocabulary_has_the_requested_size(tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "v.gguf", TinyGGUFSpec(vocab_size=1000))
    tokens = _tokens(path)
    assert len(tokens) == len(set(tokens)) == 1000
    assert all(t[:-1] in tokens for t in tokens[400:] if len(t) > 1)
    assert inspect_gguf(path).metadata["tokenizer.ggml.tokens"].length == 1000  # type: ignore[union-attr]


def test_too_small_vocabulary_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="vocab_size must be at least"):
        write_tiny_gguf(tmp_path / "v.gguf", TinyGGUFSpec(vocab_size=10))


def test_split_builder_shares_the_tensors_out(tmp_path: Path, tiny_gguf: Path) -> None:
    parts = write_tiny_split_gguf(tmp_path / "model.gguf", parts=3)
    assert [p.name for p in parts] == [f"model-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    readers = [gguf.GGUFReader(p) for p in parts]
    whole = gguf.GGUFReader(tiny_gguf)
    assert [t.name for r in readers for t in r.tensors] == [t.name for t in whole.tensors]
    assert all(len(r.tensors) > 0 for r in readers)
    for i, reader in enumerate(readers):
        assert reader.fields["split.no"].contents() == i
        assert reader.fields["split.count"].contents() == 3
        assert reader.fields["split.tensors.count"].contents() == len(whole.tensors)
    assert "tokenizer.ggml.tokens" in readers[0].fields and "tokenizer.ggml.tokens" not in readers[1].fields
    with pytest.raises(ValueError, match="cannot split"):
        write_tiny_split_gguf(tmp_path / "one.gguf", parts=1)


def test_corrupt_files_are_written(corrupt_gguf_files: dict[str, Path], tiny_gguf: Path) -> None:
    assert set(corrupt_gguf_files) == {"not_gguf", "truncated", "bad_header", "empty"}
    assert corrupt_gguf_files["empty"].stat().st_size == 0
    assert corrupt_gguf_files["bad_header"].read_bytes()[:4] == b"GGUF"
    assert not corrupt_gguf_files["not_gguf"].read_bytes().startswith(b"GGUF")
    truncated = corrupt_gguf_files["truncated"].read_bytes()
    assert tiny_gguf.read_bytes().startswith(truncated)
    assert gguf.GGUFReader(tiny_gguf).data_offset < len(truncated) < tiny_gguf.stat().st_size


# --- the real llama.cpp -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_cpp() -> Any:
    return pytest.importorskip("llama_cpp")


@pytest.fixture(scope="module")
def tiny_llm(llama_cpp: Any, tiny_gguf: Path) -> Iterator[Any]:
    llm = llama_cpp.Llama(model_path=str(tiny_gguf), n_ctx=256, verbose=False)
    yield llm
    llm.close()


def test_llama_cpp_generates_exactly_max_tokens_of_printable_ascii(tiny_llm: Any) -> None:
    out = tiny_llm.create_completion("hello", max_tokens=16, temperature=0.8, seed=1)
    text = out["choices"][0]["text"]
    assert out["usage"]["completion_tokens"] == 16
    assert out["choices"][0]["finish_reason"] == "length"
    assert text and set(text) <= PRINTABLE_ASCII


def test_same_seed_gives_same_text(tiny_llm: Any) -> None:
    texts = [tiny_llm.create_completion("hello", max_tokens=16, temperature=0.8, seed=1)["choices"][0]["text"]
             for _ in range(2)]
    other = tiny_llm.create_completion("hello", max_tokens=16, temperature=0.8, seed=2)["choices"][0]["text"]
    assert texts[0] == texts[1]
    assert other != texts[0]


def test_chat_template_is_exposed_and_used(tiny_llm: Any) -> None:
    assert tiny_llm.metadata["tokenizer.chat_template"] == CHATML_TEMPLATE
    out = tiny_llm.create_chat_completion(messages=[{"role": "user", "content": "hi"}], max_tokens=8, seed=3)
    assert out["choices"][0]["message"]["role"] == "assistant"
    assert out["usage"]["completion_tokens"] == 8
    assert set(out["choices"][0]["message"]["content"]) <= PRINTABLE_ASCII


def test_eos_reachable_variant_can_stop_early(llama_cpp: Any, tiny_gguf_eos: Path) -> None:
    llm = llama_cpp.Llama(model_path=str(tiny_gguf_eos), n_ctx=256, verbose=False)
    try:
        reasons = [llm.create_completion("hello", max_tokens=32, seed=seed)["choices"][0]["finish_reason"]
                   for seed in range(10)]
    finally:
        llm.close()
    assert "stop" in reasons


def test_quantized_tiny_model_via_the_bench_builder(llama_cpp: Any, tmp_path: Path, tiny_gguf: Path) -> None:
    path = write_bench_gguf(tmp_path / "tiny-q8.gguf", "Q8_0", spec=TinyGGUFSpec())
    info = inspect_gguf(path)
    assert info.quantization == "Q8_0"
    assert info.parameter_count == inspect_gguf(tiny_gguf).parameter_count
    assert path.stat().st_size < tiny_gguf.stat().st_size
    assert not list(tmp_path.glob("*.tmp"))  # the F16 intermediate is gone
    # Loading only: on CPUs with AMX, llama.cpp runs Q8_0 through its AMX kernels, which crash
    # (SIGILL) on some virtual machines; the F16 tests above cover generation.
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, verbose=False)
    assert llm.n_vocab() == len(_tokens(tiny_gguf))
    llm.close()


def test_bench_builder_refuses_unknown_quantization(llama_cpp: Any, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown quantization type"):
        write_bench_gguf(tmp_path / "x.gguf", "Q9_Z", spec=TinyGGUFSpec())
