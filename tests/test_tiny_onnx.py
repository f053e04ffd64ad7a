"""Tests of slmctl.testing.tiny_onnx: the synthetic ONNX models are reproducible and run on ONNX Runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import onnxruntime_genai as og
import pytest
from tokenizers import Tokenizer

from slmctl.testing.tiny_gguf import CHATML_TEMPLATE
from slmctl.testing.tiny_onnx import (
    ENCODER_HIDDEN,
    SPECIAL_TOKENS,
    TinyOnnxSpec,
    write_bench_onnx_genai,
    write_tiny_onnx_encoder,
    write_tiny_onnx_genai,
)

PRINTABLE_ASCII = {chr(c) for c in range(0x20, 0x7F)}
MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello world"}]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _generate(folder: Path, seed: int, max_new: int, guidance: tuple[str, str] | None = None) -> tuple[list[int], str]:
    """A seeded sampling run on onnxruntime-genai: the new tokens and their streamed text."""
    model = og.Model(str(folder))
    tokenizer = og.Tokenizer(model)
    prompt = tokenizer.encode(tokenizer.apply_chat_template(json.dumps(MESSAGES), add_generation_prompt=True))
    params = og.GeneratorParams(model)
    params.set_search_options(
        max_length=len(prompt) + max_new, do_sample=True, temperature=0.8, top_k=40, top_p=0.9, random_seed=seed
    )
    if guidance is not None:
        params.set_guidance(*guidance)
    generator = og.Generator(model, params)
    generator.append_tokens(prompt)
    stream = tokenizer.create_stream()
    tokens, text = [], ""
    while not generator.is_done():
        generator.generate_next_token()
        token = int(generator.get_next_tokens()[0])
        tokens.append(token)
        text += stream.decode(token)
    return tokens, text


def test_same_spec_writes_identical_files(tmp_path: Path, tiny_onnx: Path, tiny_onnx_encoder: Path) -> None:
    decoder = _files(tiny_onnx)
    assert set(decoder) == {"genai_config.json", "model.onnx", "tokenizer.json", "tokenizer_config.json"}
    assert decoder == _files(write_tiny_onnx_genai(tmp_path / "again"))
    other_seed = _files(write_tiny_onnx_genai(tmp_path / "seed1", TinyOnnxSpec(seed=1)))
    assert other_seed["model.onnx"] != decoder["model.onnx"]
    assert other_seed["tokenizer.json"] == decoder["tokenizer.json"]
    assert len(decoder["model.onnx"]) < 1_000_000
    assert _files(tiny_onnx_encoder) == _files(write_tiny_onnx_encoder(tmp_path / "encoder"))


def test_models_pass_the_full_checker(tiny_onnx: Path, tiny_onnx_encoder: Path, tmp_path: Path) -> None:
    gqa = write_tiny_onnx_genai(tmp_path / "gqa", TinyOnnxSpec(kv_heads=2))
    for folder in (tiny_onnx, gqa, tiny_onnx_encoder):
        onnx.checker.check_model(onnx.load(folder / "model.onnx"), full_check=True)


def test_genai_config_agrees_with_model_and_tokenizer(tiny_onnx: Path) -> None:
    config = json.loads((tiny_onnx / "genai_config.json").read_text())["model"]
    graph = onnx.load(tiny_onnx / "model.onnx").graph
    inputs = {i.name: [d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim] for i in graph.input}
    decoder = config["decoder"]
    assert inputs["past_key_values.1.key"] == ["batch_size", decoder["num_key_value_heads"], "past_sequence_length",
                                               decoder["head_size"]]
    assert f"past_key_values.{decoder['num_hidden_layers']}.key" not in inputs
    assert graph.output[0].type.tensor_type.shape.dim[2].dim_value == config["vocab_size"]
    tokenizer = Tokenizer.from_file(str(tiny_onnx / "tokenizer.json"))
    assert tokenizer.get_vocab_size() == config["vocab_size"]
    assert [tokenizer.id_to_token(i) for i in config["eos_token_id"]] == ["<|im_end|>", "<|endoftext|>"]
    assert tokenizer.id_to_token(config["bos_token_id"]) == SPECIAL_TOKENS[0]


def test_seeded_run_yields_exactly_max_tokens_of_printable_text(tiny_onnx: Path) -> None:
    tokens, text = _generate(tiny_onnx, seed=1, max_new=16)
    assert len(tokens) == 16
    assert not set(tokens) & {0, 1, 2}
    assert text and set(text) <= PRINTABLE_ASCII
    assert _generate(tiny_onnx, seed=1, max_new=16) == (tokens, text)
    assert _generate(tiny_onnx, seed=2, max_new=16)[1] != text


def test_gqa_model_runs_in_genai(tmp_path: Path) -> None:
    folder = write_tiny_onnx_genai(tmp_path / "gqa", TinyOnnxSpec(heads=4, kv_heads=1, model_type="qwen2"))
    assert len(_generate(folder, seed=3, max_new=8)[0]) == 8


def test_eos_variant_stops_early_for_some_seed(tiny_onnx_eos: Path) -> None:
    runs = [_generate(tiny_onnx_eos, seed, max_new=32)[0] for seed in range(1, 9)]
    stopped = [tokens for tokens in runs if len(tokens) < 32]
    assert stopped
    assert all(tokens[-1] in (0, 2) for tokens in stopped)


@pytest.mark.parametrize("fixture", ["tiny_onnx", "tiny_onnx_template_file"])
def test_chat_template_works_from_both_locations(fixture: str, request: pytest.FixtureRequest) -> None:
    folder: Path = request.getfixturevalue(fixture)
    in_file = (folder / "chat_template.jinja").exists()
    assert in_file == (fixture == "tiny_onnx_template_file")
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "GPT2Tokenizer"
    assert tokenizer_config.get("chat_template") == (None if in_file else CHATML_TEMPLATE)
    tokenizer = og.Tokenizer(og.Model(str(folder)))
    prompt = tokenizer.apply_chat_template(json.dumps(MESSAGES), add_generation_prompt=True)
    assert prompt == (
        "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhello world<|im_end|>\n<|im_start|>assistant\n"
    )
    assert list(tokenizer.encode(prompt)[:1]) == [1]


def test_json_schema_guidance_gives_valid_json(tiny_onnx: Path) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    tokens, text = _generate(tiny_onnx, seed=1, max_new=40, guidance=("json_schema", json.dumps(schema)))
    assert tokens[-1] == 2
    assert set(json.loads(text)) == {"ok"}


def test_bench_builder_accepts_a_small_spec_and_larger_vocabulary(tmp_path: Path) -> None:
    spec = TinyOnnxSpec(hidden=32, heads=2, kv_heads=1, ff=64, vocab_size=600, context_length=64)
    folder = write_bench_onnx_genai(tmp_path / "bench", spec)
    assert Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab_size() == 600
    assert len(_generate(folder, seed=1, max_new=8)[0]) == 8


def test_too_small_vocabulary_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="vocab_size must be at least 259"):
        write_tiny_onnx_genai(tmp_path / "v", TinyOnnxSpec(vocab_size=200))


def test_encoder_folder_runs_in_onnxruntime(tiny_onnx_encoder: Path) -> None:
    assert set(_files(tiny_onnx_encoder)) == {
        "model.onnx", "tokenizer.json", "tokenizer_config.json", "config.json", "modules.json",
        "sentence_bert_config.json", "1_Pooling/config.json",
    }
    pooling = json.loads((tiny_onnx_encoder / "1_Pooling" / "config.json").read_text())
    assert pooling["word_embedding_dimension"] == ENCODER_HIDDEN and pooling["pooling_mode_mean_tokens"]
    assert json.loads((tiny_onnx_encoder / "config.json").read_text())["model_type"] == "bert"
    tokenizer = Tokenizer.from_file(str(tiny_onnx_encoder / "tokenizer.json"))
    tokenizer.enable_padding(pad_id=0, pad_token=SPECIAL_TOKENS[0])
    batch = tokenizer.encode_batch(["hello world", "the quick brown fox jumps"])
    ids = np.array([e.ids for e in batch], dtype=np.int64)
    mask = np.array([e.attention_mask for e in batch], dtype=np.int64)
    session = ort.InferenceSession(str(tiny_onnx_encoder / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    (hidden,) = session.run(["last_hidden_state"], feeds)
    assert hidden.shape == (*ids.shape, ENCODER_HIDDEN) and hidden.dtype == np.float32
    pooled = (hidden * mask[..., None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
    assert np.isfinite(pooled).all()
    assert not np.allclose(pooled[0], pooled[1], atol=1e-3)
    alone = tokenizer.encode("hello world")
    ids, mask = np.array([alone.ids]), np.array([alone.attention_mask])
    (single,) = session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})
    np.testing.assert_allclose(single[0], hidden[0, : len(alone.ids)], atol=1e-5)  # padding does not leak
