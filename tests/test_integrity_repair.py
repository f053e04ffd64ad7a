"""A damaged blob shared by two models (issue 11, item 1), through the real CLI.

``verify`` says DAMAGED (exit 6) and its hint repairs: the re-import it names replaces the damaged blob (an
import never trusts a stored blob that changed since it was verified), and ``verify --repair`` moves the
damaged blob to ``quarantine/`` and fetches it again from the models' source, or names the exact file to
import again (exit 6) when that source is gone.
"""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest

from cli_runner import run_cli


def _flip_one_byte(blob: Path) -> bytes:
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    return bytes(data)


def _blob(home: Path) -> Path:
    (blob,) = (home / "models" / "blobs").iterdir()
    return blob


@pytest.fixture
def shared(tmp_path: Path, tiny_gguf: Path) -> tuple[Path, Path]:
    """A home where ``tiny`` and ``tiny2`` share one blob (imported from a copy of the tiny model)."""
    home, source = tmp_path / "home", tmp_path / "src" / "tiny.gguf"
    source.parent.mkdir()
    shutil.copyfile(tiny_gguf, source)
    assert run_cli(home, "import", str(source), "--name", "tiny").code == 0
    assert run_cli(home, "cp", "tiny", "tiny2").code == 0
    return home, source


def _statuses(home: Path) -> dict[str, str]:
    result = run_cli(home, "verify", "--json")
    return {item["name"]: item["status"] for item in json.loads(result.stdout)}


def test_following_verifys_hint_reimport_repairs_a_shared_blob(shared: tuple[Path, Path]) -> None:
    home, source = shared
    damaged = _flip_one_byte(_blob(home))
    verified = run_cli(home, "verify")
    assert verified.code == 6
    assert [line.split()[1] for line in verified.stdout.splitlines()[1:]] == ["DAMAGED:", "DAMAGED:"]
    hint = next(line for line in verified.stderr.splitlines() if line.startswith("hint: "))
    assert "slmctl verify --repair" in hint
    command = hint.split("or import the file again: ", 1)[1]
    assert command == f"slmctl import {shlex.quote(str(source))} --name tiny:latest"

    reimported = run_cli(home, *shlex.split(command)[1:])  # exactly what the hint says
    assert reimported.code == 0, reimported.stderr
    (moved,) = (home / "models" / "quarantine").iterdir()
    assert str(moved) in reimported.stderr and moved.read_bytes() == damaged  # moved aside, not deleted
    assert _statuses(home) == {"tiny:latest": "ok", "tiny2:latest": "ok"}
    assert run_cli(home, "verify").code == 0


def test_verify_repair_refetches_from_the_file_or_names_it(shared: tuple[Path, Path]) -> None:
    home, source = shared
    _flip_one_byte(_blob(home))
    repaired = run_cli(home, "verify", "--repair")
    assert repaired.code == 0, repaired.stderr
    assert [line.split()[1] for line in repaired.stdout.splitlines()[1:]] == ["repaired", "repaired"]
    assert f"(imported from {source})" in repaired.stderr
    moved_line = next(line for line in repaired.stderr.splitlines() if line.startswith("moved the damaged copy"))
    assert Path(moved_line.rsplit(" to ", 1)[1]).is_file()
    assert run_cli(home, "verify").code == 0

    _flip_one_byte(_blob(home))
    source.rename(source.with_suffix(".moved"))  # the file it came from is gone
    failed = run_cli(home, "verify", "--repair", "--json")
    assert failed.code == 6
    assert [(m["repaired"], m["status"]) for m in json.loads(failed.stdout)] == [(False, "damaged")] * 2
    error, hint = failed.stderr.strip().splitlines()[-2:]
    assert error == "error: still damaged: 'tiny:latest', 'tiny2:latest'"
    assert hint == (f"hint: {source} is not there any more: import the original file again: "
                    f"slmctl import {source} --name tiny:latest")  # once: one import repairs both models
    source.with_suffix(".moved").rename(source)
    assert run_cli(home, "import", str(source), "--name", "tiny:latest").code == 0
    assert _statuses(home) == {"tiny:latest": "ok", "tiny2:latest": "ok"}
    assert len(list((home / "models" / "quarantine").iterdir())) == 2


def test_verify_repair_restores_a_missing_file_of_an_onnx_folder(tmp_path: Path, tiny_onnx: Path) -> None:
    home = tmp_path / "home"
    assert run_cli(home, "import", str(tiny_onnx), "--name", "tiny-onnx").code == 0
    manifest = json.loads(next((home / "models" / "manifests").rglob("latest.json")).read_text())
    entry = next(f for f in manifest["files"] if f["path"] == "genai_config.json")
    blob = home / "models" / "blobs" / entry["digest"].replace(":", "-")
    blob.chmod(0o644)
    blob.unlink()
    repaired = run_cli(home, "verify", "--repair", "tiny-onnx")
    assert repaired.code == 0, repaired.stderr
    assert "moved the damaged copy" not in repaired.stderr  # a missing file has nothing to move aside
    assert blob.is_file() and run_cli(home, "run", "tiny-onnx", "hi", "--max-tokens", "2").code == 0
