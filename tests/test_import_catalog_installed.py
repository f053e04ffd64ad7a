"""``list --available`` marks INSTALLED by content, never by name (issue 11, item 8).

A tiny model imported as ``qwen2.5:3b`` installs no catalog variant; a variant is installed when its own
file (the catalog's sha256) is stored under any name, or when a stored model was pulled from its source.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from cli_runner import run_cli
from hub_fixtures import HubServer, hub_env

GGUF_SOURCE = "hf://test/tiny-GGUF/tiny-Q4_K_M.gguf"
ONNX_SOURCE = "hf://test/tiny-onnx/cpu"


def _catalog(home: Path, gguf_sha256: str | None) -> None:
    gguf = {"format": "gguf", "quant": "Q4_K_M", "device": "any", "source": GGUF_SOURCE}
    if gguf_sha256:
        gguf["sha256"] = gguf_sha256
    onnx = {"format": "onnx", "quant": "INT4", "device": "cpu", "source": ONNX_SOURCE}
    entry = {"name": "tinycat", "task": "chat", "parameter_size": "125K", "variants": [gguf, onnx]}
    (home / "catalog.json").write_text(json.dumps({"version": 1, "models": [entry]}))


def _available(home: Path, *flags: str, env: dict[str, str] | None = None) -> dict[str, dict]:
    result = run_cli(home, "list", "--available", "--json", "--type", "chat", *flags, env=env)
    assert result.code == 0, result.stderr
    return {item["name"]: item for item in json.loads(result.stdout)}


def test_a_name_installs_nothing_the_digest_does(tmp_path: Path, tiny_gguf: Path) -> None:
    home = tmp_path / "home"
    assert run_cli(home, "import", str(tiny_gguf), "--name", "qwen2.5:3b").code == 0
    assert [name for name, item in _available(home).items() if item["installed"]] == []
    assert [name for name, item in _available(home, "--format", "onnx").items() if item["installed"]] == []

    _catalog(home, hashlib.sha256(tiny_gguf.read_bytes()).hexdigest())  # the catalog publishes this file's digest
    item = _available(home)["tinycat"]
    assert item["installed"] is True and item["selected"]["installed"] is True
    assert [(v["format"], v["installed"]) for v in item["variants"]] == [("gguf", True), ("onnx", False)]
    assert _available(home, "--format", "onnx")["tinycat"]["installed"] is False  # the ONNX variant is not stored
    table = run_cli(home, "list", "--available", "--type", "chat").stdout.splitlines()
    assert next(line for line in table if line.startswith("tinycat ")).split()[-1] == "yes"
    assert next(line for line in table if line.startswith("qwen2.5-3b ")).split()[-1] == "no"


def test_a_variant_pulled_from_its_source_is_installed(tmp_path: Path, hub: HubServer) -> None:
    home = tmp_path / "home"
    home.mkdir()
    _catalog(home, None)  # no published digest: the source a stored model was pulled from decides
    assert _available(home)["tinycat"]["installed"] is False
    assert run_cli(home, "pull", GGUF_SOURCE, env=hub_env(hub)).code == 0
    item = _available(home)["tinycat"]
    assert item["installed"] is True
    assert [(v["format"], v["installed"]) for v in item["variants"]] == [("gguf", True), ("onnx", False)]
