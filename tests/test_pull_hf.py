"""``slmctl pull`` from a Hugging Face-style server: a split GGUF set, and a gated repo (``HF_TOKEN``).

The server is :class:`hub_fixtures.HubServer`; test_pull.py covers single files, ONNX folders,
resumed and concurrent pulls against it. The split set is a real one (:func:`write_tiny_split_gguf`,
the layout of llama.cpp's ``gguf-split``) that llama.cpp loads from its first part.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_runner import run_cli
from hub_fixtures import HubServer, hub_env
from slmctl.formats.gguf_info import inspect_gguf
from slmctl.testing.tiny_gguf import write_tiny_split_gguf
from tests.pull_support import stored, tmp_leftovers

PARTS = ("model-00001-of-00002.gguf", "model-00002-of-00002.gguf")


@pytest.fixture(scope="module")
def split_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    parts = write_tiny_split_gguf(tmp_path_factory.mktemp("split") / "model.gguf")
    assert tuple(p.name for p in parts) == PARTS
    return {p.name: p.read_bytes() for p in parts}


@pytest.fixture
def split_hub(split_files: dict[str, bytes], tiny_gguf: Path) -> Iterator[HubServer]:
    server = HubServer()
    server.repos[("test", "split-GGUF")] = {**split_files, "README.md": b"# a split model\n"}
    server.repos[("test", "gated-GGUF")] = {"gated-F16.gguf": tiny_gguf.read_bytes()}
    yield server
    server.close()


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_split_gguf_pulls_and_runs(slmctl_home: Path, split_hub: HubServer, split_files: dict[str, bytes]) -> None:
    # The repo's only model has no quant in its name: 'hf.co/<owner>/<repo>' picks it without one.
    pulled = run_cli(slmctl_home, "pull", "hf.co/test/split-GGUF", env=hub_env(split_hub))
    assert pulled.code == 0, pulled.stderr
    assert "pulled hf.co/test/split-gguf:latest" in pulled.stdout
    names, blobs = stored(slmctl_home)
    assert names == ["hf.co/test/split-gguf:latest"]
    assert blobs == sorted(_sha(data).replace(":", "-") for data in split_files.values())

    shown = json.loads(run_cli(slmctl_home, "show", "hf.co/test/split-gguf", "--json").stdout)
    assert shown["files"] == [{"path": name, "digest": _sha(split_files[name]), "size": len(split_files[name])}
                              for name in PARTS]
    assert shown["source"]["ref"] == "hf.co/test/split-GGUF" and shown["size"] == sum(map(len, split_files.values()))

    # llama.cpp opens the first part and finds the second next to it.
    ran = run_cli(slmctl_home, "run", "hf.co/test/split-GGUF", "hi", "--max-tokens", "3", env=hub_env(split_hub))
    assert ran.code == 0 and ran.stdout.strip(), ran.stderr
    assert "pulling" not in ran.stderr


def test_split_gguf_details_count_every_part(slmctl_home: Path, split_hub: HubServer, tiny_gguf: Path) -> None:
    assert run_cli(slmctl_home, "pull", "hf.co/test/split-GGUF", env=hub_env(split_hub)).code == 0
    shown = json.loads(run_cli(slmctl_home, "show", "hf.co/test/split-gguf", "--json").stdout)
    assert shown["parameter_count"] == inspect_gguf(tiny_gguf).parameter_count


def test_gated_repo_needs_hf_token(slmctl_home: Path, split_hub: HubServer) -> None:
    split_hub.token = "hf_loopback_token"
    no_token = run_cli(slmctl_home, "pull", "hf.co/test/gated-GGUF:F16",
                       env=hub_env(split_hub, HF_TOKEN="", HUGGING_FACE_HUB_TOKEN=""))
    assert no_token.code == 5, no_token.stderr
    assert "access denied (HTTP 401)" in no_token.stderr and "set HF_TOKEN" in no_token.stderr
    assert stored(slmctl_home) == ([], []) and tmp_leftovers(slmctl_home) == []

    # Every request (listing and download) must carry the token: the server refuses any without it.
    with_token = run_cli(slmctl_home, "pull", "hf.co/test/gated-GGUF:F16",
                         env=hub_env(split_hub, HF_TOKEN="hf_loopback_token"))
    assert with_token.code == 0, with_token.stderr
    assert stored(slmctl_home)[0] == ["hf.co/test/gated-gguf:f16"]
