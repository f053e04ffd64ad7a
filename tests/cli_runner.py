"""Run the real ``slmctl`` entry point in a subprocess, the way users and scripts do."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
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


def run_cli(home: Path, *args: str, input: str | None = None, timeout: float = 120,
            env: dict[str, str] | None = None) -> Result:
    """Run ``slmctl ARGS`` with ``SLMCTL_HOME=home``; stdin is ``input`` (or empty, never a TTY)."""
    full_env = {**os.environ, "SLMCTL_HOME": str(home), "NO_COLOR": "1", **(env or {})}
    full_env.pop("SLMCTL_DEBUG", None)
    proc = subprocess.run(
        [*slmctl_command(), *args], input=input if input is not None else "", capture_output=True,
        text=True, env=full_env, timeout=timeout,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)
