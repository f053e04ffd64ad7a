"""ONNX models through the real CLI, side by side with GGUF models: same commands, same output shape."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cli_runner import run_cli


@pytest.fixture
def home(tmp_path: Path, tiny_onnx: Path, tiny_gguf: Path) -> Path:
    home = tmp_path / "home"
    assert run_cli(home, "import", str(tiny_onnx), "--name", "tiny-onnx").code == 0
    assert run_cli(home, "import", str(tiny_gguf), "--name", "tiny").code == 0
    return home


def test_import_run_rm_onnx(home: Path) -> None:
    # end to end: the console script with the ONNX runtime
    listed = {m["name"]: m for m in json.loads(run_cli(home, "list", "--json", process=True).stdout)}
    assert listed["tiny-onnx:latest"]["format"] == "onnx"
    result = run_cli(home, "run", "tiny-onnx", "hello", "--max-tokens", "8", "--json", process=True)
    assert result.code == 0, result.stderr
    obj = json.loads(result.stdout)
    assert obj["eval_count"] == 8 and obj["done_reason"] == "length" and obj["response"]
    piped = json.loads(run_cli(home, "run", "tiny-onnx", "Summarise", "--max-tokens", "2", "--json",
                               input="a long text\n" * 4, process=True).stdout)
    assert piped["prompt_eval_count"] > obj["prompt_eval_count"] - 1
    assert run_cli(home, "rm", "tiny-onnx", process=True).code == 0
    assert "tiny-onnx:latest" not in run_cli(home, "list", process=True).stdout


def test_seed_stop_and_verbose(home: Path) -> None:
    args = ("run", "tiny-onnx", "hello", "--max-tokens", "16", "--seed", "5")
    first, second = run_cli(home, *args), run_cli(home, *args)
    assert first.code == 0 and first.stdout == second.stdout
    text = first.stdout.rstrip("\n")
    stop = text[4:6]
    cut = run_cli(home, *args, "--param", f"stop={stop}")
    assert cut.stdout.rstrip("\n") == text[: text.index(stop)]
    verbose = run_cli(home, *args, "--verbose")
    assert "eval count:           16 token(s)" in verbose.stderr


def test_format_json_parses(home: Path) -> None:
    result = run_cli(home, "run", "tiny-onnx", "json please", "--format", "json", "--max-tokens", "300",
                     "--seed", "2")
    assert result.code == 0
    assert isinstance(json.loads(result.stdout), dict)


def test_unsupported_option_warns_on_stderr(home: Path) -> None:
    result = run_cli(home, "run", "tiny-onnx", "hi", "--max-tokens", "2", "--param", "min_p=0.1")
    assert result.code == 0 and "warning: min_p=0.1 is not supported by onnxruntime-genai" in result.stderr


def test_unavailable_npu_is_exit_7_naming_usable_providers(home: Path) -> None:
    result = run_cli(home, "run", "tiny-onnx", "x", "--device", "npu")
    assert result.code == 7
    assert "npu" in result.stderr and "usable here: cpu" in result.stderr


def test_incomplete_folder_is_rejected_with_exit_4(tmp_path: Path, tiny_onnx: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_onnx, broken)
    (broken / "tokenizer_config.json").unlink()
    result = run_cli(tmp_path / "home", "import", str(broken))
    assert result.code == 4 and "tokenizer_config.json" in result.stderr
    assert json.loads(run_cli(tmp_path / "home", "list", "--json").stdout) == []


def test_gguf_and_onnx_output_have_the_same_structure(home: Path) -> None:
    runs = [json.loads(run_cli(home, "run", name, "hi", "--max-tokens", "4", "--json").stdout)
            for name in ("tiny", "tiny-onnx")]
    assert set(runs[0]) == set(runs[1])
    listed = json.loads(run_cli(home, "list", "--json").stdout)
    assert len({frozenset(item) for item in listed}) == 1
    shown = [json.loads(run_cli(home, "show", name, "--json").stdout) for name in ("tiny", "tiny-onnx")]
    assert set(shown[0]) == set(shown[1]) and shown[1]["template"] and shown[1]["context_length"] == 512
    verbose = [run_cli(home, "run", name, "hi", "--max-tokens", "4", "--verbose").stderr for name in ("tiny", "tiny-onnx")]
    assert [line.split(":")[0] for line in verbose[0].splitlines()] == \
        [line.split(":")[0] for line in verbose[1].splitlines()]
    table = run_cli(home, "list").stdout.splitlines()
    assert table[0].split() == ["NAME", "ID", "FORMAT", "PARAMS", "QUANT", "SIZE", "MODIFIED"] and len(table) == 3


def test_embed_with_an_onnx_encoder_and_a_gguf_model(home: Path, tiny_onnx_encoder: Path) -> None:
    assert run_cli(home, "import", str(tiny_onnx_encoder), "--name", "enc").code == 0
    shown = json.loads(run_cli(home, "show", "enc", "--json").stdout)
    assert shown["format"] == "onnx" and shown["family"] == "embedding"
    for name in ("enc", "tiny"):
        result = run_cli(home, "embed", name, "first text", "second text")
        assert result.code == 0, result.stderr
        vectors = json.loads(result.stdout)["embeddings"]
        assert len(vectors) == 2 and len(vectors[0]) > 8
    refused = run_cli(home, "run", "enc", "hi")
    assert refused.code == 2 and "embedding model" in refused.stderr
