"""``slmctl pull`` and the auto-pull of ``run`` against a loopback Hugging Face-style server.

The server answers the Hub's tree API (``/api/models/<owner>/<repo>/tree/<rev>[/<folder>]``) with LFS
sha256 digests and serves files at ``/<owner>/<repo>/resolve/<rev>/<path>`` (ranges honoured), so the
real CLI runs end to end with ``HF_ENDPOINT`` pointing at it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cli_runner import run_cli, slmctl_command
from slmctl.testing.tiny_gguf import write_tiny_gguf

QUANTS = ("Q4_K_M", "Q8_0", "F16")


class HubServer:
    """Serves ``repos[(owner, repo)][path] = bytes``; ``corrupt`` paths get one byte flipped in transit."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], dict[str, bytes]] = {}
        self.corrupt: set[str] = set()
        self.chunk, self.chunk_delay = 64 * 1024, 0.0
        self.bytes_served = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def tree(self, owner: str, repo: str, folder: str) -> list[dict] | None:
        files = self.repos.get((owner, repo))
        if files is None:
            return None
        prefix = f"{folder}/" if folder else ""
        out: list[dict] = []
        dirs: set[str] = set()
        for path, data in sorted(files.items()):
            if not path.startswith(prefix):
                continue
            parts = path.split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d.startswith(prefix) and d not in dirs:
                    dirs.add(d)
                    out.append({"type": "directory", "oid": "0" * 40, "size": 0, "path": d})
            entry = {"type": "file", "oid": hashlib.sha1(data).hexdigest(), "size": len(data), "path": path}
            if path.endswith((".gguf", ".onnx", ".data")):
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            out.append(entry)
        return out

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            path = self.path.split("?", 1)[0]
            tree = re.match(r"^/api/models/([^/]+)/([^/]+)/tree/([^/]+)/?(.*)$", path)
            if tree:
                listing = hub.tree(tree.group(1), tree.group(2), tree.group(4))
                if listing is None:
                    self._send(404, b'{"error": "Repository not found"}')
                else:
                    self._send(200, json.dumps(listing).encode())
                return
            resolve = re.match(r"^/([^/]+)/([^/]+)/resolve/([^/]+)/(.+)$", path)
            data = resolve and hub.repos.get((resolve.group(1), resolve.group(2)), {}).get(resolve.group(4))
            if not resolve or data is None:
                self._send(404, b"Entry not found", "text/plain")
                return
            if resolve.group(4) in hub.corrupt:
                data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
            start, end = 0, len(data)
            match = re.match(r"bytes=(\d+)-(\d*)$", self.headers.get("Range") or "")
            if match:
                start = int(match.group(1))
                end = min(int(match.group(2)) + 1 if match.group(2) else len(data), len(data))
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(end - start))
            self.end_headers()
            try:
                while start < end:
                    block = data[start:min(start + hub.chunk, end)]
                    self.wfile.write(block)
                    with hub._lock:
                        hub.bytes_served += len(block)
                    start += len(block)
                    if hub.chunk_delay:
                        time.sleep(hub.chunk_delay)
            except OSError:
                self.close_connection = True

    return Handler


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write_tiny_gguf(tmp_path_factory.mktemp("hub") / "tiny.gguf").read_bytes()


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    from slmctl.testing.tiny_onnx import write_tiny_onnx_genai

    folder = write_tiny_onnx_genai(tmp_path_factory.mktemp("hub") / "tiny-onnx")
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def hub(gguf_bytes: bytes, onnx_files: dict[str, bytes]):  # type: ignore[no-untyped-def]
    server = HubServer()
    server.repos[("test", "tiny-GGUF")] = {f"tiny-{q}.gguf": gguf_bytes for q in QUANTS} | {"README.md": b"# tiny\n"}
    server.repos[("test", "bad-GGUF")] = {"bad-Q4_K_M.gguf": gguf_bytes}
    server.corrupt.add("bad-Q4_K_M.gguf")
    server.repos[("test", "tiny-onnx")] = {f"cpu/{k}": v for k, v in onnx_files.items()} | {"README.md": b"x"}
    yield server
    server.close()


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


def _env(hub: HubServer, **extra: str) -> dict[str, str]:
    env = {"HF_ENDPOINT": hub.endpoint, "NO_PROXY": "127.0.0.1", "HTTP_PROXY": "", "HTTPS_PROXY": "",
           "http_proxy": "", "https_proxy": "", "ALL_PROXY": "", "all_proxy": ""}
    return {**env, **extra}


def _stored(home: Path) -> tuple[list[dict], list[str]]:
    listed = json.loads(run_cli(home, "list", "--json").stdout)
    blobs = home / "models" / "blobs"
    return listed, sorted(p.name for p in blobs.iterdir()) if blobs.is_dir() else []


def test_pull_hf_repo_then_run(home: Path, hub: HubServer, gguf_bytes: bytes) -> None:
    pulled = run_cli(home, "pull", "hf.co/test/tiny-GGUF", env=_env(hub))
    assert pulled.code == 0, pulled.stderr
    assert "pulled hf.co/test/tiny-gguf:latest" in pulled.stdout
    assert "success" in pulled.stderr and "verifying sha256 digest" in pulled.stderr
    listed, blobs = _stored(home)
    assert [m["name"] for m in listed] == ["hf.co/test/tiny-gguf:latest"]
    assert blobs == [f"sha256-{hashlib.sha256(gguf_bytes).hexdigest()}"]
    shown = json.loads(run_cli(home, "show", "hf.co/test/tiny-GGUF", "--json").stdout)
    assert "hf.co/test/tiny-GGUF:Q4_K_M" in json.dumps(shown)
    ran = run_cli(home, "run", "hf.co/test/tiny-GGUF", "hi", "--max-tokens", "2", env=_env(hub))
    assert ran.code == 0 and ran.stdout.strip(), ran.stderr
    assert "pulling" not in ran.stderr  # already stored: no download


def test_run_alias_pulls_on_first_use(home: Path, hub: HubServer) -> None:
    ran = run_cli(home, "run", "tiny:test", "hi", "--max-tokens", "2", env=_env(hub))
    assert ran.code == 0, ran.stderr
    assert ran.stdout.strip() and "success" in ran.stderr
    listed, _ = _stored(home)
    assert [m["name"] for m in listed] == ["tiny:test"]
    unknown = run_cli(home, "run", "tiny:tset", "hi", env=_env(hub))
    assert unknown.code == 3 and "tiny:test" in unknown.stderr, unknown.stderr


def test_pull_json_events(home: Path, hub: HubServer) -> None:
    pulled = run_cli(home, "pull", "tiny:test", "--json", env=_env(hub))
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
    corrupt = run_cli(home, "pull", "hf.co/test/bad-GGUF", env=_env(hub))
    assert corrupt.code == 6 and "digest mismatch" in corrupt.stderr, corrupt.stderr
    assert _stored(home) == ([], [])
    assert not [p for p in (home / "models" / "tmp").iterdir() if not p.name.endswith(".lock")]
    missing = run_cli(home, "pull", "hf.co/test/nothing-GGUF", env=_env(hub))
    assert missing.code == 3, missing.stderr
    offline = run_cli(home, "pull", "tiny:test", env=_env(hub, SLMCTL_OFFLINE="1"))
    assert offline.code == 5 and "offline mode (SLMCTL_OFFLINE=1)" in offline.stderr
    ran = run_cli(home, "run", "tiny:test", "hi", env=_env(hub, SLMCTL_OFFLINE="1"))
    assert ran.code == 5
    assert _stored(home) == ([], [])


def _sidecar_progress(tmp: Path) -> int:
    for sidecar in tmp.glob("pull-*.partial.json"):
        try:
            return sum(p["done"] for p in json.loads(sidecar.read_text())["parts"])
        except (OSError, ValueError, KeyError):
            return 0
    return 0


def test_killed_pull_resumes(home: Path, hub: HubServer, gguf_bytes: bytes) -> None:
    hub.chunk, hub.chunk_delay = 4096, 0.05
    env = {**os.environ, "SLMCTL_HOME": str(home), **_env(hub)}
    proc = subprocess.Popen([*slmctl_command(), "pull", "hf.co/test/tiny-GGUF"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while _sidecar_progress(home / "models" / "tmp") == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _stored(home) == ([], [])
    assert 0 < hub.bytes_served < len(gguf_bytes)  # killed mid-download
    hub.chunk_delay = 0.0
    again = run_cli(home, "pull", "hf.co/test/tiny-GGUF", env=_env(hub))
    assert again.code == 0, again.stderr
    assert hub.bytes_served < 2 * len(gguf_bytes), (hub.bytes_served, len(gguf_bytes))
    listed, blobs = _stored(home)
    assert len(listed) == 1 and len(blobs) == 1


def test_pull_onnx_folder(home: Path, hub: HubServer, onnx_files: dict[str, bytes]) -> None:
    pulled = run_cli(home, "pull", "hf://test/tiny-onnx/cpu", env=_env(hub))
    assert pulled.code == 0, pulled.stderr
    listed, blobs = _stored(home)
    assert [m["name"] for m in listed] == ["hf.co/test/tiny-onnx:cpu"]
    assert len(blobs) == len({hashlib.sha256(v).hexdigest() for v in onnx_files.values()})
    ran = run_cli(home, "run", "hf.co/test/tiny-onnx:cpu", "hi", "--max-tokens", "2")
    assert ran.code == 0 and ran.stdout.strip(), ran.stderr


def test_concurrent_pulls_share_the_work(home: Path, hub: HubServer, gguf_bytes: bytes) -> None:
    hub.chunk, hub.chunk_delay = 8192, 0.03
    env = {**os.environ, "SLMCTL_HOME": str(home), **_env(hub)}
    procs = [subprocess.Popen([*slmctl_command(), "pull", "hf.co/test/tiny-GGUF:Q8_0", "--quiet"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=60), *p.communicate()) for p in procs]
    assert [r[0] for r in results] == [0, 0], results
    assert all(r[1] == "" and r[2] == "" for r in results)  # --quiet
    listed, blobs = _stored(home)
    assert [m["name"] for m in listed] == ["hf.co/test/tiny-gguf:q8_0"] and len(blobs) == 1
    assert hub.bytes_served < 2 * len(gguf_bytes)


def test_local_names_of_source_references() -> None:
    from slmctl.pull import local_name
    from slmctl.sources import parse_source

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


def test_terminal_progress_renders_events() -> None:
    import io

    from slmctl.cli.pull import _RichProgress

    stream = io.StringIO()
    with _RichProgress(stream) as bars:
        for event in ({"status": "pulling manifest"}, {"status": "resolved", "source": "x", "variant": {}},
                      {"status": "pulling abc", "digest": "sha256:abc", "total": 10, "completed": 0},
                      {"status": "pulling abc", "digest": "sha256:abc", "total": 10, "completed": 10},
                      {"status": "success"}):
            bars.handle(event)
    assert "pulling manifest" in stream.getvalue() and "success" in stream.getvalue()
