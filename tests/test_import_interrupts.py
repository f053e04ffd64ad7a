"""Ctrl-C during ``slmctl import`` (issue 11, item 10): the model is stored and the exit is 0, or it is not
stored and the exit is 130 - never both. Real processes, real SIGINT, timed by what the store shows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from filelock import FileLock

from cli_runner import slmctl_command
from pull_support import stored
from waiting import wait_for

pytestmark = pytest.mark.skipif(os.name != "posix", reason="sends SIGINT and fills a pipe")


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "SLMCTL_HOME": str(home), "NO_COLOR": "1"}
    env.pop("SLMCTL_DEBUG", None)
    return env


def _full_pipe() -> tuple[int, int]:
    """A pipe whose buffer is full: a process writing to it blocks until the other end is read."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    for chunk in (65536, 4096, 1):
        try:
            while True:
                os.write(write_end, b"x" * chunk)
        except BlockingIOError:
            pass
    os.set_blocking(write_end, True)
    return read_end, write_end


def test_ctrl_c_after_the_model_is_stored_exits_0(tmp_path: Path, tiny_gguf: Path) -> None:
    """SIGINT while ``import`` prints its result (stdout blocked on a full pipe), after the commit point."""
    home = tmp_path / "home"
    read_end, write_end = _full_pipe()
    proc = subprocess.Popen([*slmctl_command(), "import", str(tiny_gguf), "--name", "tiny"], env=_env(home),
                            stdin=subprocess.DEVNULL, stdout=write_end, stderr=subprocess.PIPE)
    os.close(write_end)
    drained: list[bytes] = []
    try:
        manifest = home / "models" / "manifests" / "tiny" / "latest.json"
        wait_for(manifest.is_file, "the manifest")
        time.sleep(0.3)  # the process is now blocked writing "imported tiny:latest ..." to the full pipe
        proc.send_signal(signal.SIGINT)
    finally:
        with os.fdopen(read_end, "rb") as pipe:
            reader = threading.Thread(target=lambda: drained.append(pipe.read()), daemon=True)
            reader.start()
            _, err = proc.communicate(timeout=60)
            reader.join(timeout=10)
    assert proc.returncode == 0, err.decode()
    assert b"imported tiny:latest" in b"".join(drained)
    assert b"interrupted after the model was stored: it was kept" in err
    assert stored(home)[0] == ["tiny:latest"]


def test_ctrl_c_before_the_commit_point_exits_130_with_nothing_stored(tmp_path: Path, tiny_gguf: Path) -> None:
    """SIGINT while ``import`` waits for the store lock to commit (the file is copied and hashed)."""
    home = tmp_path / "home"
    tmp = home / "models" / "tmp"
    (home / "models").mkdir(parents=True)
    with FileLock(str(home / "models" / ".lock")):  # another process holds the store: the commit waits
        proc = subprocess.Popen([*slmctl_command(), "import", str(tiny_gguf), "--name", "tiny"], env=_env(home),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        size = tiny_gguf.stat().st_size

        def staged() -> bool:
            return tmp.is_dir() and any(p.stat().st_size == size for p in tmp.glob("stage-*"))

        wait_for(staged, "the staged copy")
        time.sleep(0.3)  # copied, hashed, now waiting for the lock
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert stored(home) == ([], [])
    assert list(tmp.iterdir()) == []  # the staged copy is gone too
