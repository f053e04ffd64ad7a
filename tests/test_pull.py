"""``slmctl pull`` and the auto-pull of ``run`` against a loopback Hugging Face-style server.

The server (:class:`hub_fixtures.HubServer`, fixture ``hub``) answers the Hub's tree API with LFS sha256
digests and serves files with ranges, so the real CLI runs end to end with ``HF_ENDPOINT`` pointing at it.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cli_runner import run_cli, slmctl_command
from hub_fixtures import HubServer, hub_env, stored


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    catalog = {"version": 1, "models": [{
        "name": "tinytest", "aliases": ["tiny:test"], "task": "chat", "parameter_size": "125K",
        "variants": [{"format": "gguf", "quant": "Q4_K_M", "device": "any",
                      "source": "hf://test/tiny-GGUF/tiny-Q4_K_M.gguf"}]}]}
    (home / "catalog.json").write_text(json.dumps(catalog))
    return home


def test_pull_hf_repo_then_run(home: Path, hub: HubServer, gguf_bytes: bytes) -> None:
    pulled = run_cli(home, "pull", "hf.co/test/tiny-GGUF", env=hub_env(hub))
    assert pulled.code == 0, pulled.stderr
    assert "pulled hf.co/test/tiny-gguf:latest" in pulled.stdout
    assert "success" in pulled.stderr and "verifying sha256 digest" in pulled.stderr
    listed, blobs = stored(home)
    assert [m["name"] for m in listed] == ["hf.co/test/tiny-gguf:latest"]
    assert blobs == [f"sha256-{hashlib.sha256(gguf_bytes).hexdigest()}"]
    shown = json.loads(run_cli(home, "show", "hf.co/test/tiny-GGUF", "--json").stdout)
    assert "hf.co/test/tiny-GGUF:Q4_K_M" in json.dumps(shown)
    ran = run_cli(home, "run", "hf.co/test/tiny-GGUF", "hi", "--max-tokens", "2", env=hub_env(hub))
    assert ran.code == 0 and ran.stdout.strip(), ran.stderr
    assert "pulling" not in ran.stderr  # already stored: no download


def test_run_alias_pulls_on_first_use(home: Path, hub: HubServer) -> None:
    ran = run_cli(home, "run", "tiny:test", "hi", "--max-tokens", "2", env=hub_env(hub))
    assert ran.code == 0, ran.stderr
    assert ran.stdout.strip() and "success" in ran.stderr
    listed, _ = stored(home)
    assert [m["name"] for m in listed] == ["tiny:test"]
    unknown = run_cli(home, "run", "tiny:tset", "hi", env=hub_env(hub))
    assert unknown.code == 3 and "tiny:test" in unknown.stderr, unknown.stderr


def test_pull_json_events(home: Path, hub: HubServer) -> None:
    pulled = run_cli(home, "pull", "tiny:test", "--json", env=hub_env(hub))
    assert pulled.code == 0, pulled.stderr
    events = [json.loads(line) for line in pulled.stdout.splitlines()]
    statuses = [e["status"] for e in events]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert {"resolved", "verifying sha256 digest", "writing manifest"} <= set(statuses)
    resolved = next(e for e in events if e["status"] == "resolved")
    assert resolved["variant"]["quant"] == "Q4_K_M" and resolved["source"].startswith("hf://test/tiny-GGUF")
    progress = [e for e in events if e["status"].startswith("pulling ") and "completed" in e]
    assert progress and progress[-1]["completed"] == progress[-1]["total"]
    assert progress[-1]["digest"].startswith("sha256:")


def test_errors_corrupt_missing_offline(home: Path, hub: HubServer) -> None:
    corrupt = run_cli(home, "pull", "hf.co/test/bad-GGUF", env=hub_env(hub))
    assert corrupt.code == 6 and "digest mismatch" in corrupt.stderr, corrupt.stderr
    assert stored(home) == ([], [])
    assert not [p for p in (home / "models" / "tmp").iterdir() if not p.name.endswith(".lock")]
    missing = run_cli(home, "pull", "hf.co/test/nothing-GGUF", env=hub_env(hub))
    assert missing.code == 3, missing.stderr
    offline = run_cli(home, "pull", "tiny:test", env=hub_env(hub, SLMCTL_OFFLINE="1"))
    assert offline.code == 5 and "offline mode (SLMCTL_OFFLINE=1)" in offline.stderr
    ran = run_cli(home, "run", "tiny:test", "hi", env=hub_env(hub, SLMCTL_OFFLINE="1"))
    assert ran.code == 5
    assert stored(home) == ([], [])


def _sidecar_progress(tmp: Path) -> int:
    for sidecar in tmp.glob("pull-*.partial.json"):
        try:
            return sum(p["done"] for p in json.loads(sidecar.read_text())["parts"])
        except (OSError, ValueError, KeyError):
            return 0
    return 0


def test_killed_pull_resumes(home: Path, hub: HubServer, gguf_bytes: bytes) -> None:
    hub.chunk, hub.chunk_delay = 4096, 0.05
    env = {**os.environ, "SLMCTL_HOME": str(home), **hub_env(hub)}
    proc = subprocess.Popen([*slmctl_command(), "pull", "hf.co/test/tiny-GGUF"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while _sidecar_progress(home / "models" / "tmp") == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert stored(home) == ([], [])
    assert 0 < hub.bytes_served < len(gguf_bytes)  # killed mid-download
    hub.chunk_delay = 0.0
    again = run_cli(home, "pull", "hf.co/test/tiny-GGUF", env=hub_env(hub))
    assert again.code == 0, again.stderr
    assert hub.bytes_served < 2 * len(gguf_bytes), (hub.bytes_served, len(gguf_bytes))
    listed, blobs = stored(home)
    assert len(listed) == 1 and len(blobs) == 1


def test_pull_onnx_folder(home: Path, hub: HubServer, onnx_files: dict[str, bytes]) -> None:
    pulled = run_cli(home, "pull", "hf://test/tiny-onnx/cpu", env=hub_env(hub))
    assert pulled.code == 0, pulled.stderr
    listed, blobs = stored(home)
    assert [m["name"] for m in listed] == ["hf.co/test/tiny-onnx:cpu"]
    assert len(blobs) == len({hashlib.sha256(v).hexdigest() for v in onnx_files.values()})
    ran = run_cli(home, "run", "hf.co/test/tiny-onnx:cpu", "hi", "--max-tokens", "2")
    assert ran.code == 0 and ran.stdout.strip(), ran.stderr


def test_concurrent_pulls_share_the_work(home: Path, hub: HubServer, gguf_bytes: bytes) -> None:
    hub.chunk, hub.chunk_delay = 8192, 0.03
    env = {**os.environ, "SLMCTL_HOME": str(home), **hub_env(hub)}
    procs = [subprocess.Popen([*slmctl_command(), "pull", "hf.co/test/tiny-GGUF:Q8_0", "--quiet"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=60), *p.communicate()) for p in procs]
    assert [r[0] for r in results] == [0, 0], results
    assert all(r[1] == "" and r[2] == "" for r in results)  # --quiet
    listed, blobs = stored(home)
    assert [m["name"] for m in listed] == ["hf.co/test/tiny-gguf:q8_0"] and len(blobs) == 1
    assert hub.bytes_served < 2 * len(gguf_bytes)


def test_local_names_of_source_references() -> None:
    from slmctl.refs import parse_source
    from slmctl.services.pull import local_name

    def name(text: str) -> str:
        source = parse_source(text)
        assert source is not None
        return str(local_name(source))

    assert name("hf.co/Test/Tiny-GGUF") == "hf.co/test/tiny-gguf:latest"
    assert name("hf.co/test/tiny-GGUF:Q8_0") == "hf.co/test/tiny-gguf:q8_0"
    assert name("hf://test/tiny-GGUF/tiny-Q4_K_M.gguf") == "hf.co/test/tiny-gguf:tiny-q4_k_m"
    assert name("hf://test/tiny-onnx/cpu") == "hf.co/test/tiny-onnx:cpu"
    assert name("ollama://qwen2.5:3b") == "qwen2.5:3b"
    assert name("ollama://example.com:5000/me/model:v1") == "example.com-5000/me/model:v1"
    assert name("https://example.com/models/Model-Q4_K_M.gguf") == "model-q4_k_m:latest"


def test_split_gguf_is_materialized_next_to_its_parts(tmp_path: Path) -> None:
    from slmctl.store import FileEntry, Manifest, ModelStore, SourceInfo

    store = ModelStore(tmp_path / "models")
    parts = [store.stage_bytes(b"part one"), store.stage_bytes(b"part two!")]
    names = ["m-00001-of-00002.gguf", "m-00002-of-00002.gguf"]
    manifest = Manifest(name="split", tag="latest", format="gguf", source=SourceInfo(type="hf", ref="x"),
                        files=[FileEntry(path=n, digest=b.digest, size=b.size) for n, b in zip(names, parts)])
    store.commit(manifest, parts)
    first = store.model_path(manifest)
    assert first.name == names[0] and (first.parent / names[1]).read_bytes() == b"part two!"


def test_cleanup_tmp_keeps_recent_partial_pulls(tmp_path: Path) -> None:
    from slmctl.store import ModelStore

    store = ModelStore(tmp_path / "models")
    store.tmp_dir.mkdir(parents=True)
    day, week = 86400, 8 * 86400
    ages = {"pull-abc.partial": day, "pull-old.partial": week, "stage-999999999-x.partial": day}
    for entry, age in ages.items():
        (store.tmp_dir / entry).write_bytes(b"x")
        os.utime(store.tmp_dir / entry, (time.time() - age, time.time() - age))
    assert store.cleanup_tmp() == 2
    assert [p.name for p in store.tmp_dir.iterdir()] == ["pull-abc.partial"]


def test_events_have_ollamas_wire_shape() -> None:
    from slmctl.events import FileProgress, Resolved, Status, wire_handler

    lines: list[dict] = []
    handle = wire_handler(lines.append)
    for event in (Status("pulling manifest"), Resolved("tiny:test", "hf://t/r", {"quant": "Q4_K_M"}),
                  FileProgress("pulling 0123", "m.gguf", 5, None, "sha256:0123"), Status("success")):
        handle(event)
    assert lines == [{"status": "pulling manifest"},
                     {"status": "resolved", "name": "tiny:test", "source": "hf://t/r", "variant": {"quant": "Q4_K_M"}},
                     {"status": "pulling 0123", "digest": "sha256:0123", "file": "m.gguf", "total": None,
                      "completed": 5},
                     {"status": "success"}]
    assert Status("warning: x").is_warning and not Status("success").is_warning
    assert FileProgress("p", "f", 3, 3).finished and not FileProgress("p", "f", 3, None).finished


def test_terminal_progress_renders_events() -> None:
    import io

    from slmctl.cli.progress import RichProgress
    from slmctl.events import FileProgress, Resolved, Status

    stream = io.StringIO()
    with RichProgress(stream) as bars:
        for event in (Status("pulling manifest"), Resolved("x:latest", "x", {}),
                      FileProgress("pulling abc", "m.gguf", 0, 10, "sha256:abc"),
                      FileProgress("pulling abc", "m.gguf", 10, 10, "sha256:abc"), Status("success")):
            bars.handle(event)
    assert "pulling manifest" in stream.getvalue() and "success" in stream.getvalue()


def test_builtin_catalog_alias_through_a_mirror(home: Path, hub: HubServer, gguf_bytes: bytes) -> None:
    """The README's first command against a local mirror: the built-in alias, its pinned revision."""
    hub.repos[("Qwen", "Qwen2.5-0.5B-Instruct-GGUF")] = {"qwen2.5-0.5b-instruct-q4_k_m.gguf": gguf_bytes}
    ran = run_cli(home, "run", "qwen2.5:0.5b", "Hello, who are you?", "--max-tokens", "4", env=hub_env(hub))
    assert ran.code == 0, ran.stderr
    assert ran.stdout.strip() and "success" in ran.stderr
    shown = json.loads(run_cli(home, "show", "qwen2.5:0.5b", "--json").stdout)
    assert shown["source"]["ref"].startswith("hf://Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf")
    assert shown["source"]["revision"] == "9217f5db79a29953eb74d5343926648285ec7e67"  # pinned by the catalog


def test_unknown_name_suggests_stored_models_too(home: Path, tiny_gguf: Path) -> None:
    assert run_cli(home, "import", str(tiny_gguf), "--name", "assistant").code == 0
    typo = run_cli(home, "run", "asistant", "hi", env={"SLMCTL_OFFLINE": "1"})
    assert typo.code == 3, typo.stderr
    assert "did you mean: assistant" in typo.stderr
