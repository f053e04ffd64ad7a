"""The ONNX backend on the real onnxruntime-genai, with tiny models built from plain ONNX ops."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest

from slmctl.backends.base import ChatMessage, GenerateRequest
from slmctl.backends.onnx import OnnxGenaiBackend, OnnxGenaiModel
from slmctl.errors import DeviceUnavailable, InvalidModelFile, OperationFailed
from slmctl.formats.onnx_folder import inspect_onnx_folder
from slmctl.options import LoadOptions, SamplingOptions


@pytest.fixture(scope="module")
def model(tiny_onnx: Path) -> OnnxGenaiModel:
    loaded = OnnxGenaiBackend().load(tiny_onnx, LoadOptions(num_ctx=512, num_thread=1))
    yield loaded
    loaded.close()


def ask(model: OnnxGenaiModel, text: str = "hello", **options: object) -> tuple[str, object]:
    gen = model.generate(GenerateRequest(SamplingOptions(**options), messages=(ChatMessage("user", text),)))
    return gen.complete(), gen.stats


def test_generates_exactly_num_predict_tokens_with_stats(model: OnnxGenaiModel) -> None:
    text, stats = ask(model, num_predict=12, seed=1)
    assert text
    assert stats.eval_count == 12 and stats.done_reason == "length"
    assert stats.prompt_eval_count == len(model.prompt_tokens(
        GenerateRequest(messages=(ChatMessage("user", "hello"),))))
    assert 0 < stats.prompt_eval_duration <= stats.total_duration
    assert 0 < stats.eval_duration <= stats.total_duration


def test_seed_reproducible_and_greedy_deterministic(model: OnnxGenaiModel) -> None:
    assert ask(model, num_predict=16, seed=7)[0] == ask(model, num_predict=16, seed=7)[0]
    assert ask(model, num_predict=16, seed=7)[0] != ask(model, num_predict=16, seed=8)[0]
    assert ask(model, num_predict=16, temperature=0)[0] == ask(model, num_predict=16, temperature=0, seed=3)[0]


def test_chat_template_from_either_location(model: OnnxGenaiModel, tiny_onnx_template_file: Path) -> None:
    request = GenerateRequest(messages=(ChatMessage("user", "hi"),))
    assert "<|im_start|>" in model.prompt_text(request)
    with OnnxGenaiBackend().load(tiny_onnx_template_file, LoadOptions(num_thread=1)) as other:
        assert other.prompt_text(request) == model.prompt_text(request)


def test_stop_string_matched_on_streamed_text(model: OnnxGenaiModel) -> None:
    full, _ = ask(model, num_predict=24, seed=3)
    stop = full[6:8]
    cut, stats = ask(model, num_predict=24, seed=3, stop=[stop])
    assert cut == full[: full.index(stop)] and stats.done_reason == "stop"


def test_num_predict_is_bounded_by_the_context(tiny_onnx: Path) -> None:
    with OnnxGenaiBackend().load(tiny_onnx, LoadOptions(num_ctx=64, num_thread=1)) as small:
        _, stats = ask(small, num_predict=-1, seed=1)
        assert stats.prompt_eval_count + stats.eval_count == 64 and stats.done_reason == "length"
        with pytest.raises(OperationFailed, match="context holds 64"):
            ask(small, "hello world " * 60)


def test_eos_ends_with_stop(tiny_onnx_eos: Path) -> None:
    with OnnxGenaiBackend().load(tiny_onnx_eos, LoadOptions(num_thread=1)) as m:
        reasons = {ask(m, num_predict=200, seed=s)[1].done_reason for s in range(8)}
    assert "stop" in reasons


def test_json_format_output_parses(model: OnnxGenaiModel) -> None:
    gen = model.generate(GenerateRequest(SamplingOptions(num_predict=300, seed=3), prompt="x", json_format="json"))
    assert isinstance(json.loads(gen.complete()), dict)


def test_cancel_from_another_thread(model: OnnxGenaiModel) -> None:
    gen = model.generate(GenerateRequest(SamplingOptions(num_predict=-1, seed=1), prompt="x"))
    for i, _ in enumerate(gen):
        if i == 3:
            threading.Thread(target=gen.cancel).start()
    assert gen.stats.done_reason == "cancel" and gen.stats.eval_count < 200


def test_threads_share_one_model(model: OnnxGenaiModel) -> None:
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(ask(model, num_predict=8, seed=5)[0])) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and len(set(results)) == 1


def test_unsupported_options_are_reported_not_silent(model: OnnxGenaiModel) -> None:
    warnings = model.unsupported(SamplingOptions(min_p=0.05, typical_p=0.5))
    assert any("min_p" in w for w in warnings) and any("typical_p" in w for w in warnings)
    assert model.unsupported(SamplingOptions()) == []


def test_unavailable_provider_is_exit_7(tiny_onnx: Path) -> None:
    with pytest.raises(DeviceUnavailable):
        OnnxGenaiBackend().load(tiny_onnx, LoadOptions(), device="cuda")


def test_folder_validation_names_what_is_missing(tiny_onnx: Path, tmp_path: Path) -> None:
    info = inspect_onnx_folder(tiny_onnx)
    assert info.kind == "genai" and info.context_length == 512 and "model.onnx" in info.files
    for missing in ("tokenizer_config.json", "tokenizer.json", "model.onnx"):
        broken = tmp_path / missing
        shutil.copytree(tiny_onnx, broken)
        (broken / missing).unlink()
        with pytest.raises(InvalidModelFile, match=missing.replace(".", r"\.")):
            inspect_onnx_folder(broken)
    bad = tmp_path / "badconfig"
    shutil.copytree(tiny_onnx, bad)
    (bad / "genai_config.json").write_text("{not json")
    with pytest.raises(InvalidModelFile, match="genai_config.json"):
        inspect_onnx_folder(bad)


def test_encoder_embeddings(tiny_onnx_encoder: Path) -> None:
    with OnnxGenaiBackend().load(tiny_onnx_encoder, LoadOptions(num_thread=1)) as encoder:
        a, b, a2 = encoder.embed(["the sky is blue", "grass is green", "the sky is blue"])
    assert a == pytest.approx(a2) and a != pytest.approx(b)
    assert sum(x * x for x in a) == pytest.approx(1.0, abs=1e-4)
