"""Two ``slmctl`` processes working on one store at once never corrupt it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

from cli_runner import run_cli, slmctl_command


def test_two_processes_importing_and_removing_at_once(tmp_path: Path, tiny_gguf: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "SLMCTL_HOME": str(home)}
    cmd = " ".join(slmctl_command())
    # each worker imports six models (sharing one blob) and removes every second one right away
    script = (f'for i in 0 1 2 3 4 5; do {cmd} import {tiny_gguf} --name "$WHO:$i" >/dev/null || exit 1; '
              f'if [ $((i % 2)) = 1 ]; then {cmd} rm "$WHO:$i" >/dev/null || exit 1; fi; done')
    procs = [subprocess.Popen(["bash", "-c", script], env={**env, "WHO": who}) for who in ("a", "b")]
    assert [p.wait(timeout=240) for p in procs] == [0, 0]

    names = sorted(m["name"] for m in json.loads(run_cli(home, "list", "--json").stdout))
    assert names == sorted(f"{who}:{i}" for who in "ab" for i in (0, 2, 4))
    blobs = list((home / "models" / "blobs").iterdir())
    assert len(blobs) == 1  # one shared blob, intact
    assert "sha256-" + hashlib.sha256(blobs[0].read_bytes()).hexdigest() == blobs[0].name
    assert not list((home / "models" / "tmp").glob("*"))
    assert run_cli(home, "run", "a:0", "hi", "--max-tokens", "2").code == 0
