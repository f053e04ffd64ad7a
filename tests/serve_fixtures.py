"""A real ``slmctl serve`` on a free loopback port, over a store holding the seed's model names.

``serve_home`` imports the tiny models under the names the seed's examples use: ``phi4:mini`` (tiny
GGUF), ``qwen2.5:3b`` (tiny ONNX GenAI), ``nomic-embed-text`` (tiny ONNX encoder), plus ``long`` (a
tiny GGUF with a 32k context, so a generation can run for seconds). :class:`Served` starts the server
as users do (``python -m slmctl serve``, uvicorn, runner processes) and stops it with a signal.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from slmctl.services.importer import import_path
from slmctl.store import ModelStore
from slmctl.testing.tiny_gguf import TinyGGUFSpec, write_tiny_gguf


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test's environment without any serve setting of the developer's, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "SLMCTL_"))}
    env.update({"SLMCTL_HOME": str(home), "NO_COLOR": "1", "NO_PROXY": "*"})
    env.update(extra or {})
    return env


class Served:
    """One ``slmctl serve`` process."""

    def __init__(self, home: Path, *args: str, env: dict[str, str] | None = None, log_dir: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = (log_dir or home) / f"serve-{self.port}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "slmctl", "serve", "--host", f"127.0.0.1:{self.port}", *args],
            env=clean_env(home, env), stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"slmctl serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/api/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError(f"slmctl serve did not start:\n{self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def runner_pids(self) -> list[int]:
        import psutil

        return [child.pid for child in psutil.Process(self.proc.pid).children(recursive=True)
                if "slmctl.engine.runner_process" in " ".join(child.cmdline())]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture(scope="session")
def serve_home(tmp_path_factory: pytest.TempPathFactory, tiny_gguf: Path, tiny_onnx: Path,
               tiny_onnx_encoder: Path) -> Path:
    """A store with the seed's model names (read-only for the tests: copy it to change it)."""
    home = tmp_path_factory.mktemp("serve-home")
    store = ModelStore(home / "models")
    import_path(store, tiny_gguf, "phi4:mini")
    import_path(store, tiny_onnx, "qwen2.5:3b")
    import_path(store, tiny_onnx_encoder, "nomic-embed-text")
    long = write_tiny_gguf(tmp_path_factory.mktemp("long") / "long.gguf", TinyGGUFSpec(context_length=32768))
    import_path(store, long, "long")
    return home


@pytest.fixture
def private_home(serve_home: Path, tmp_path: Path) -> Path:
    """A copy of ``serve_home`` a test may change (create, copy, delete)."""
    home = tmp_path / "home"
    shutil.copytree(serve_home, home)
    return home


@pytest.fixture(scope="module")
def server(serve_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server for a module's client tests."""
    served = Served(serve_home, log_dir=tmp_path_factory.mktemp("serve-logs"))
    yield served
    served.stop()


def start(home: Path, *args: str, **kwargs: object) -> Served:
    return Served(home, *args, **kwargs)  # type: ignore[arg-type]


__all__ = ["Served", "clean_env", "free_port", "signal", "start"]
