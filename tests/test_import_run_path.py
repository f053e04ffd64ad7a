"""``slmctl run`` of a file or folder by path (issue 11, item 6): imported under its file name on first use.

``./tiny.gguf``, ``/abs/tiny.gguf`` and ``tiny.gguf`` (from the folder holding it) all run the same model,
imported once; a changed file is imported again in its place; a name held by another model is not taken over;
an ONNX folder works the same way; a path that does not exist is a usage error and an unknown name keeps its
"did you mean".
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from cli_runner import Result, run_cli, slmctl_command
from slmctl.testing.tiny_gguf import TinyGGUFSpec, write_tiny_gguf


def run_in(folder: Path, home: Path, *args: str) -> Result:
    """``slmctl ARGS`` started in ``folder`` (relative paths are the point here)."""
    env = {**os.environ, "SLMCTL_HOME": str(home), "NO_COLOR": "1"}
    env.pop("SLMCTL_DEBUG", None)
    proc = subprocess.run([*slmctl_command(), *args], cwd=folder, env=env, input="", capture_output=True,
                          text=True, timeout=120)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def _models(home: Path) -> dict[str, str]:
    listed = json.loads(run_cli(home, "list", "--json").stdout)
    return {entry["name"]: entry["digest"] for entry in listed}


def test_run_a_gguf_file_by_path(tmp_path: Path, tiny_gguf: Path) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    shutil.copyfile(tiny_gguf, work / "tiny.gguf")
    first = run_in(work, home, "run", "./tiny.gguf", "hi", "--max-tokens", "2")
    assert first.code == 0, first.stderr
    assert first.stdout.strip()
    assert f"importing {work / 'tiny.gguf'} as 'tiny:latest' (first use; 'slmctl rm tiny' removes it)" in first.stderr
    for name in (str(work / "tiny.gguf"), "tiny.gguf"):
        again = run_in(work, home, "run", name, "hi", "--max-tokens", "2")
        assert again.code == 0 and "importing" not in again.stderr, again.stderr
    models = _models(home)
    assert list(models) == ["tiny:latest"]

    write_tiny_gguf(work / "tiny.gguf", TinyGGUFSpec(seed=7))  # the file changes: imported again in its place
    changed = run_in(work, home, "run", "tiny.gguf", "hi", "--max-tokens", "2")
    assert changed.code == 0, changed.stderr
    assert "changed since it was imported as 'tiny:latest': importing it again" in changed.stderr
    assert list(_models(home)) == ["tiny:latest"] and _models(home)["tiny:latest"] != models["tiny:latest"]

    other = tmp_path / "other"
    other.mkdir()
    shutil.copyfile(tiny_gguf, other / "tiny.gguf")  # another tiny.gguf: 'tiny' belongs to another model now
    second = run_in(other, home, "run", "./tiny.gguf", "hi", "--max-tokens", "2")
    assert second.code == 0, second.stderr
    assert "as 'tiny-2:latest'" in second.stderr
    assert sorted(_models(home)) == ["tiny-2:latest", "tiny:latest"]


def test_run_an_onnx_folder_by_path(tmp_path: Path, tiny_onnx: Path) -> None:
    home = tmp_path / "home"
    ran = run_in(tiny_onnx.parent, home, "run", f"./{tiny_onnx.name}", "hi", "--max-tokens", "2")
    assert ran.code == 0, ran.stderr
    assert f"as '{tiny_onnx.name}:latest'" in ran.stderr
    assert [m["format"] for m in json.loads(run_cli(home, "list", "--json").stdout)] == ["onnx"]


def test_paths_and_names_that_are_no_model(tmp_path: Path, tiny_gguf: Path) -> None:
    home = tmp_path / "home"
    assert run_cli(home, "import", str(tiny_gguf), "--name", "tiny").code == 0
    missing = run_in(tmp_path, home, "run", "./nope.gguf", "hi")
    assert missing.code == 2
    assert missing.stderr.splitlines() == [
        "error: no such file or folder: ./nope.gguf",
        "hint: run a .gguf file or an ONNX model folder by its path, or a stored model by its name (see 'slmctl list')"]
    (tmp_path / "notes.txt").write_text("not a model")
    assert run_in(tmp_path, home, "run", "./notes.txt", "hi").code == 2
    unknown = run_in(tmp_path, home, "run", "tiyn", "hi")
    assert unknown.code == 3 and "did you mean: tiny" in unknown.stderr
