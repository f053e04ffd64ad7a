"""``slmctl serve --read-only-store``: replicas serve a shared store they never write to nor lock.

Real servers on loopback over a copy of the serve store made read-only with chmod; the tests run as root
(chmod does not stop root), so they also compare every file's bytes and times before and after and check
that no lock, staging or materialized file appeared.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cli_runner import run_cli
from hub_fixtures import hub_env
from serve_fixtures import Served, clean_env
from slmctl.errors import StoreReadOnly
from slmctl.names import parse_model_ref
from slmctl.store import ModelStore


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: kind, size, mtime and a hash of a file's bytes."""
    out: dict[str, tuple] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else ""
        out[str(path.relative_to(root))] = (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns, digest)
    return out


def chmod_tree(root: Path, writable: bool) -> None:
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        path.chmod(mode | stat.S_IWUSR if writable else mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


@pytest.fixture
def read_only_home(private_home: Path) -> Iterator[Path]:
    """A copy of the serve store without its lock file, staging or materialized folders, made read-only."""
    models = private_home / "models"
    (models / ".lock").unlink(missing_ok=True)
    for name in ("tmp", "materialized"):
        shutil.rmtree(models / name, ignore_errors=True)
    chmod_tree(models, writable=False)
    yield private_home
    chmod_tree(models, writable=True)


def test_writes_answer_403_reads_and_generation_work_and_the_store_is_untouched(read_only_home: Path,
                                                                               tmp_path: Path) -> None:
    models = read_only_home / "models"
    before = snapshot(models)
    served = Served(read_only_home, "--read-only-store", log_dir=tmp_path)
    try:
        url = served.url
        digest = "sha256:" + "0" * 64
        writes = [
            ("POST", "/api/pull", {"model": "phi4:mini"}),
            ("POST", "/api/push", {"model": "phi4:mini"}),
            ("POST", "/api/create", {"model": "mine", "from": "phi4:mini"}),
            ("POST", "/api/copy", {"source": "phi4:mini", "destination": "copy"}),
            ("DELETE", "/api/delete", {"model": "phi4:mini"}),
            ("POST", f"/api/blobs/{digest}", None),
        ]
        for method, path, body in writes:
            answer = httpx.request(method, url + path, json=body, content=None if body is not None else b"x")
            assert answer.status_code == 403, (path, answer.text)
            error = answer.json()["error"]
            assert isinstance(error, str) and "read-only" in error and "slmctl pull" in error
        assert httpx.head(f"{url}/api/blobs/{digest}").status_code == 404  # reading is fine
        names = {m["name"] for m in httpx.get(url + "/api/tags").json()["models"]}
        assert {"phi4:mini", "qwen2.5:3b", "nomic-embed-text:latest"} <= names
        assert httpx.post(url + "/api/show", json={"model": "qwen2.5:3b"}).status_code == 200
        for model in ("phi4:mini", "qwen2.5:3b"):  # GGUF (its blob), ONNX (a folder of links outside the store)
            answer = httpx.post(url + "/api/generate", timeout=120, json={
                "model": model, "prompt": "Hi", "stream": False, "options": {"num_predict": 3}})
            assert answer.status_code == 200, answer.text
            assert answer.json()["eval_count"] == 3
        chat = httpx.post(url + "/v1/chat/completions", timeout=120, json={
            "model": "qwen2.5:3b", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]})
        assert chat.status_code == 200, chat.text
        embedded = httpx.post(url + "/api/embed", timeout=120, json={"model": "nomic-embed-text", "input": "hi"})
        assert embedded.status_code == 200, embedded.text
    finally:
        assert served.stop() == 0
    after = snapshot(models)
    assert after == before  # no byte, time or entry changed: no lock file, no staging, no materialized folder
    assert not (models / ".lock").exists()


def test_read_only_mode_comes_from_the_environment_and_the_config_file(read_only_home: Path, tmp_path: Path) -> None:
    config = tmp_path / "replica.json"
    config.write_text(json.dumps({"read_only_store": True, "deployment": {"model": "phi4:mini"}}))
    for args, env in ((("--config", str(config)), {}), ((), {"SLMCTL_READ_ONLY_STORE": "1"})):
        served = Served(read_only_home, *args, env=env, log_dir=tmp_path)
        try:
            assert httpx.post(served.url + "/api/pull", json={"model": "phi4:mini"}).status_code == 403
            deleted = httpx.request("DELETE", served.url + "/api/delete", json={"model": "phi4:mini"})
            assert deleted.status_code == 403
        finally:
            served.stop()
    assert (read_only_home / "models" / "manifests").is_dir() and not (read_only_home / "models" / ".lock").exists()


def test_a_missing_model_stops_start_up_with_a_read_only_store(read_only_home: Path, tmp_path: Path) -> None:
    config = tmp_path / "production.json"
    config.write_text(json.dumps({"deployment": {"model": "microsoft/phi-4-mini",
                                                 "optimization": {"quantization": "dynamic"}}}))
    proc = subprocess.run([sys.executable, "-m", "slmctl", "serve", "--host", "127.0.0.1:0", "--read-only-store",
                           "--config", str(config)], env=clean_env(read_only_home), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 3
    assert "'microsoft/phi-4-mini' is not in the read-only store" in proc.stderr
    assert "slmctl pull microsoft/phi-4-mini" in proc.stderr


def test_the_store_itself_refuses_changes_and_takes_no_lock(read_only_home: Path) -> None:
    models = read_only_home / "models"
    before = snapshot(models)
    store = ModelStore(models, read_only=True)
    phi = parse_model_ref("phi4:mini")
    assert store.get(phi).format == "gguf" and len(store.list()) >= 4
    for change in (lambda: store.copy(phi, parse_model_ref("other")), lambda: store.remove(phi),
                   store.collect_garbage, store.open_staging, lambda: store.stage_bytes(b"x")):
        with pytest.raises(StoreReadOnly, match="read-only"):
            change()
    onnx = store.get(parse_model_ref("qwen2.5:3b"))
    folder = store.model_path(onnx)  # built outside the store
    assert models not in folder.parents and (folder / "genai_config.json").is_file()
    assert snapshot(models) == before


def test_a_model_pulled_once_by_the_job_is_served_by_every_replica(tmp_path: Path, hub) -> None:  # noqa: ANN001
    """The pull Job fills the shared store; replicas read it read-only. A writable server with the seed's
    deployment.model pulls the model itself at start-up (quantization picks the variant)."""
    shared = tmp_path / "shared"
    job = run_cli(shared, "pull", "hf.co/test/tiny-GGUF:Q8_0", env=hub_env(hub))
    assert job.code == 0, job.stderr
    chmod_tree(shared / "models", writable=False)
    before = snapshot(shared / "models")
    replicas = [Served(shared, "--read-only-store", "--preload", "hf.co/test/tiny-GGUF:Q8_0", log_dir=tmp_path)
                for _ in range(2)]
    try:
        for replica in replicas:
            answer = httpx.post(replica.url + "/api/generate", timeout=120, json={
                "model": "hf.co/test/tiny-gguf:q8_0", "prompt": "Hi", "stream": False, "options": {"num_predict": 2}})
            assert answer.status_code == 200, answer.text
    finally:
        for replica in replicas:
            replica.stop()
    assert snapshot(shared / "models") == before
    chmod_tree(shared / "models", writable=True)

    own = tmp_path / "own"
    config = tmp_path / "deploy.json"
    config.write_text(json.dumps({"deployment": {"model": "hf.co/test/tiny-GGUF",
                                                 "optimization": {"quantization": "q4_k_m"}}}))
    served = Served(own, "--config", str(config), env=hub_env(hub), log_dir=tmp_path)
    try:
        ready = None
        for _ in range(600):
            ready = httpx.get(served.url + "/readyz")
            if ready.status_code == 200:
                break
            import time

            time.sleep(0.1)
        assert ready is not None and ready.status_code == 200, (ready.text if ready else "", served.log())
        names = [m["name"] for m in httpx.get(served.url + "/api/tags").json()["models"]]
        assert names == ["hf.co/test/tiny-gguf:q4_k_m"]
    finally:
        served.stop()
    assert os.path.isdir(own / "models" / "blobs")
