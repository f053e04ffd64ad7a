"""The GGUF backend on the real llama.cpp, with tiny random-weight models."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from slmctl.backends.base import ChatMessage, GenerateRequest
from slmctl.backends.gguf import LlamaCppBackend, LlamaCppModel
from slmctl.errors import InvalidModelFile, OperationFailed
from slmctl.options import LoadOptions, SamplingOptions


@pytest.fixture(scope="module")
def model(tiny_gguf: Path) -> LlamaCppModel:
    loaded = LlamaCppBackend().load(tiny_gguf, LoadOptions(num_ctx=512, num_thread=1))
    yield loaded
    loaded.close()


def ask(model: LlamaCppModel, text: str = "hello", **options: object) -> tuple[str, object]:
    gen = model.generate(GenerateRequest(SamplingOptions(**options), messages=(ChatMessage("user", text),)))
    return gen.complete(), gen.stats


def test_generates_exactly_num_predict_tokens_with_stats(model: LlamaCppModel) -> None:
    text, stats = ask(model, num_predict=12, seed=1)
    assert text and text.isprintable()
    assert stats.eval_count == 12 and stats.done_reason == "length"
    assert stats.prompt_eval_count == len(model.prompt_tokens(
        GenerateRequest(messages=(ChatMessage("user", "hello"),))))
    assert 0 < stats.prompt_eval_duration <= stats.total_duration
    assert 0 < stats.eval_duration <= stats.total_duration


def test_same_seed_same_text_other_seed_other_text(model: LlamaCppModel) -> None:
    a, _ = ask(model, num_predict=16, seed=7)
    b, _ = ask(model, num_predict=16, seed=7)
    c, _ = ask(model, num_predict=16, seed=8)
    assert a == b and a != c


def test_chat_template_comes_from_gguf_metadata(model: LlamaCppModel) -> None:
    assert "<|im_start|>" in (model.info.chat_template or "")
    tokens = model.prompt_tokens(GenerateRequest(messages=(ChatMessage("user", "hi"),)))
    assert "<|im_start|>assistant" in model.detokenize(tokens) or len(tokens) > 5


def test_stop_string_ends_generation_without_leaking(model: LlamaCppModel) -> None:
    full, _ = ask(model, num_predict=24, seed=3)
    stop = full[8:10]
    cut, stats = ask(model, num_predict=24, seed=3, stop=[stop])
    assert cut == full[: full.index(stop)]
    assert stats.done_reason == "stop"


def test_context_bounds_num_predict(tiny_gguf: Path) -> None:
    with LlamaCppBackend().load(tiny_gguf, LoadOptions(num_ctx=64, num_thread=1)) as small:
        text, stats = ask(small, num_predict=-1, seed=1)
        # llama.cpp rounds the context up (to 256 here): the loaded size is the bound
        n_ctx = small.info.context_length
        assert stats.prompt_eval_count + stats.eval_count == n_ctx and stats.done_reason == "length"


def test_prompt_longer_than_context_is_a_clear_error(tiny_gguf: Path) -> None:
    with LlamaCppBackend().load(tiny_gguf, LoadOptions(num_ctx=32, num_thread=1)) as small:
        with pytest.raises(OperationFailed, match=f"context holds {small.info.context_length}"):
            ask(small, "word " * 600)


def test_json_mode_output_parses(model: LlamaCppModel) -> None:
    gen = model.generate(GenerateRequest(SamplingOptions(num_predict=400, seed=3), prompt="x", json_format="json"))
    assert isinstance(json.loads(gen.complete()), dict)


def test_cancel_from_another_thread(model: LlamaCppModel) -> None:
    gen = model.generate(GenerateRequest(SamplingOptions(num_predict=-1, seed=1), prompt="x"))
    chunks = []
    for chunk in gen:
        chunks.append(chunk)
        if len(chunks) == 5:
            threading.Thread(target=gen.cancel).start()
    assert gen.stats.done_reason == "cancel" and gen.stats.eval_count < 100


def test_two_threads_on_one_model_are_serialised(model: LlamaCppModel) -> None:
    results: list[str] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(3):
                results.append(ask(model, num_predict=8, seed=5)[0])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 6 and len(set(results)) == 1


def test_eos_ends_generation_with_stop(tiny_gguf_eos: Path) -> None:
    with LlamaCppBackend().load(tiny_gguf_eos, LoadOptions(num_ctx=512, num_thread=1)) as m:
        reasons = {ask(m, num_predict=200, seed=s)[1].done_reason for s in range(6)}
    assert "stop" in reasons


def test_tokenize_detokenize_round_trip(model: LlamaCppModel) -> None:
    tokens = model.tokenize("hello world")
    assert tokens and model.detokenize(tokens).strip() == "hello world"


def test_embeddings_are_normalised_vectors(tiny_gguf: Path) -> None:
    with LlamaCppBackend().load(tiny_gguf, LoadOptions(num_ctx=128, num_thread=1), embedding=True) as m:
        vectors = m.embed(["hello", "world"])
    assert len(vectors) == 2 and len(vectors[0]) == 64
    assert abs(sum(x * x for x in vectors[0]) - 1.0) < 1e-3


def _unknown_architecture(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    key = b"general.architecture" + (8).to_bytes(4, "little") + (5).to_bytes(8, "little") + b"llama"
    assert key in data
    dst.write_bytes(data.replace(key, key[:-5] + b"llamz", 1))
    return dst


def test_llama_cpp_refusal_shows_the_real_reason(tiny_gguf: Path, tmp_path: Path) -> None:
    bad = _unknown_architecture(tiny_gguf, tmp_path / "odd.gguf")
    with pytest.raises(InvalidModelFile) as info:
        LlamaCppBackend().load(bad, LoadOptions(num_ctx=64))
    assert "llamz" in info.value.message and "Failed to load model" not in info.value.message
