"""Drive the real ``slmctl`` command line from tests: in process through ``main(argv, ctx)`` (the
default: fast, and the same code path as the console script below its ``sys.exit``), or in a
subprocess through the installed console script (:func:`run_cli_process`) for what needs a real
process: signals and Ctrl-C, timeouts, TTYs, process-global state, and the end-to-end checks.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


def slmctl_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m slmctl``."""
    script = Path(sys.executable).with_name("slmctl")
    if script.exists():
        return [str(script)]
    found = shutil.which("slmctl")
    return [found] if found else [sys.executable, "-m", "slmctl"]


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


def cli_env(home: Path, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a test's ``slmctl`` sees: this one, ``SLMCTL_HOME=home``, ``NO_COLOR=1``, ``env``;
    never ``SLMCTL_DEBUG`` (a developer's shell must not change what the tests read)."""
    full_env = {**os.environ, "SLMCTL_HOME": str(home), "NO_COLOR": "1", **(env or {})}
    full_env.pop("SLMCTL_DEBUG", None)
    return full_env


def run_cli(home: Path, *args: str, input: str | None = None, timeout: float = 120,
            env: dict[str, str] | None = None, process: bool = False) -> Result:
    """Run ``slmctl ARGS`` with ``SLMCTL_HOME=home``; stdin is ``input`` (or empty, never a TTY).

    In process by default (``timeout`` is then not enforced: a test needing it passes ``process=True``).
    """
    if process:
        return run_cli_process(home, *args, input=input, timeout=timeout, env=env)
    return run_cli_in_process(home, *args, input=input, env=env)


def run_cli_process(home: Path, *args: str, input: str | None = None, timeout: float = 120,
                    env: dict[str, str] | None = None) -> Result:
    """``slmctl ARGS`` through the installed console script, in a child process."""
    proc = subprocess.run(
        [*slmctl_command(), *args], input=input if input is not None else "", capture_output=True,
        text=True, env=cli_env(home, env), timeout=timeout,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def _text_stream(data: bytes = b"") -> io.TextIOWrapper:
    """A text stream over bytes (with ``.buffer``, as a pipe has), never a TTY."""
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", newline=None)


def run_cli_in_process(home: Path, *args: str, input: str | None = None,
                       env: dict[str, str] | None = None) -> Result:
    """``main(ARGS, ctx)`` with the context's streams in memory and ``cli_env`` as its environment."""
    from slmctl.cli.app import main
    from slmctl.cli.context import AppContext

    stdin = _text_stream((input or "").encode())
    stdout, stderr = _text_stream(), _text_stream()
    ctx = AppContext.create(env=cli_env(home, env), stdin=stdin, stdout=stdout, stderr=stderr)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        code = main(list(args), ctx)
    except SystemExit as exc:  # main returns its code: a SystemExit escaping it is a bug to see
        raise AssertionError(f"slmctl {' '.join(args)} raised SystemExit({exc.code!r}) out of main") from exc
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
    return Result(code, _read(stdout), _read(stderr))


def _read(stream: io.TextIOWrapper) -> str:
    stream.flush()
    raw = stream.buffer.getvalue()  # type: ignore[attr-defined]
    # text mode, as subprocess.run(text=True) reads a pipe: universal newlines
    return raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
