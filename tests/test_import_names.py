"""``slmctl import --name X`` never silently replaces a different model named X (issue 11, item 10).

Refused with exit 2, naming both models, unless ``--force``; importing the same model again is fine; a bundle
is refused as a whole before anything is stored.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_runner import run_cli
from pull_support import stored, tmp_leftovers
from slmctl.testing.tiny_gguf import TinyGGUFSpec, write_tiny_gguf


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("names")
    return {
        "a": write_tiny_gguf(folder / "a.gguf"),
        "same-size": write_tiny_gguf(folder / "b.gguf", TinyGGUFSpec(seed=1)),  # only hashing tells it apart
        "smaller": write_tiny_gguf(folder / "c.gguf", TinyGGUFSpec(n_layers=1)),
    }


def _ids(home: Path) -> dict[str, str]:
    return {e["name"]: e["digest"].removeprefix("sha256:")[:12] for e in json.loads(run_cli(home, "list", "--json").stdout)}


def test_a_different_model_is_refused_without_force(tmp_path: Path, files: dict[str, Path]) -> None:
    home = tmp_path / "home"
    assert run_cli(home, "import", str(files["a"]), "--name", "x").code == 0
    before = _ids(home)

    refused = run_cli(home, "import", str(files["same-size"]), "--name", "x")
    assert refused.code == 2, refused.stderr
    error, hint = refused.stderr.strip().splitlines()
    assert error.startswith("error: the name 'x:latest' is taken by another model")
    assert before["x:latest"] in error and str(files["a"]) in error and str(files["same-size"]) in error
    assert hint == "hint: give the new model another name with --name, or add --force to replace 'x:latest'"
    assert _ids(home) == before and tmp_leftovers(home) == []

    early = run_cli(home, "import", str(files["smaller"]), "--name", "x")  # refused before anything is copied
    assert early.code == 2 and "taken by another model" in early.stderr and str(files["smaller"]) in early.stderr
    assert _ids(home) == before and tmp_leftovers(home) == []

    again = run_cli(home, "import", str(files["a"]), "--name", "x")  # the same model again: fine
    assert again.code == 0, again.stderr
    assert _ids(home) == before

    forced = run_cli(home, "import", str(files["same-size"]), "--name", "x", "--force")
    assert forced.code == 0, forced.stderr
    assert _ids(home)["x:latest"] != before["x:latest"]
    assert len(stored(home)[1]) == 1  # the replaced model's blob was collected


def test_a_bundle_is_refused_as_a_whole(tmp_path: Path, files: dict[str, Path]) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    for name, key in (("x", "a"), ("y", "smaller")):
        assert run_cli(source, "import", str(files[key]), "--name", name).code == 0
    bundle = tmp_path / "models.tar"
    assert run_cli(source, "export", "y", "x", "-o", str(bundle)).code == 0
    assert run_cli(target, "import", str(files["same-size"]), "--name", "x").code == 0
    before = _ids(target)

    refused = run_cli(target, "import", str(bundle))
    assert refused.code == 2 and "the name 'x:latest' is taken by another model" in refused.stderr
    assert _ids(target) == before and tmp_leftovers(target) == []  # not even y was stored

    forced = run_cli(target, "import", str(bundle), "--force")
    assert forced.code == 0, forced.stderr
    assert _ids(target) == _ids(source)
