"""A loopback Hugging Face-style server and its fixtures, shared by the pull and create tests.

:class:`HubServer` answers the Hub's tree API (``/api/models/<owner>/<repo>/tree/<rev>[/<folder>]``) with
LFS sha256 digests and serves files at ``/<owner>/<repo>/resolve/<rev>/<path>`` (ranges honoured), so the
real CLI runs end to end with ``HF_ENDPOINT`` pointing at it (:func:`hub_env`). The fixtures are
registered for the whole suite through ``pytest_plugins`` in ``conftest.py``: ``hub`` serves
``test/tiny-GGUF`` (a tiny F16 model under the names ``tiny-<QUANT>.gguf``), ``test/bad-GGUF`` (corrupted
in transit) and ``test/tiny-onnx`` (an ONNX GenAI folder under ``cpu/``).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from cli_runner import run_cli
from slmctl.testing.tiny_gguf import write_tiny_gguf
from tests.http_fixtures import LoopbackServer, ServedBy

QUANTS = ("Q4_K_M", "Q8_0", "F16")


class HubServer(ServedBy):
    """Serves ``repos[(owner, repo)][path] = bytes``; ``corrupt`` paths get one byte flipped in transit.

    With ``token`` set, every request without ``Authorization: Bearer <token>`` gets 401, as a gated repo.
    """

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], dict[str, bytes]] = {}
        self.corrupt: set[str] = set()
        self.token: str | None = None
        self.chunk, self.chunk_delay = 64 * 1024, 0.0
        self.bytes_served = 0
        self._lock = threading.Lock()
        self._server = LoopbackServer(_handler(self)).start()

    @property
    def endpoint(self) -> str:
        return self._server.base

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
            if hub.token is not None and self.headers.get("Authorization") != f"Bearer {hub.token}":
                self._send(401, b'{"error": "Access to this model is restricted: authenticate with a token"}')
                return
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


def hub_env(hub: HubServer, **extra: str) -> dict[str, str]:
    """The environment pointing the Hugging Face transport at ``hub`` (no proxies), plus ``extra``."""
    env = {"HF_ENDPOINT": hub.endpoint, "NO_PROXY": "127.0.0.1", "HTTP_PROXY": "", "HTTPS_PROXY": "",
           "http_proxy": "", "https_proxy": "", "ALL_PROXY": "", "all_proxy": ""}
    return {**env, **extra}


def stored(home: Path) -> tuple[list[dict], list[str]]:
    """The models ``list --json`` shows in ``home`` and the names of the stored blobs."""
    listed = json.loads(run_cli(home, "list", "--json").stdout)
    blobs = home / "models" / "blobs"
    return listed, sorted(p.name for p in blobs.iterdir()) if blobs.is_dir() else []
