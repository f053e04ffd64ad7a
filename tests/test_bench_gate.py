"""The regression gate of ``slmctl bench --baseline`` through the real CLI: a baseline that matches no
configuration of the run fails (exit 8) instead of passing having compared nothing, and the report (text
and JSON) lists the configurations found on one side only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slmctl.errors import ExitCode
from slmctl.services.bench.model import BenchConfig
from slmctl.services.importer import import_path
from slmctl.store import ModelStore
from tests.cli_runner import run_cli

RUN = ("bench", "tiny", "--prompt-tokens", "8", "--repetitions", "1", "--warmup", "0")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, tiny_gguf: Path) -> Path:
    root = tmp_path_factory.mktemp("gate-home")
    import_path(ModelStore(root / "models"), tiny_gguf, "tiny")
    return root


@pytest.fixture(scope="module")
def document(home: Path) -> dict:
    """``slmctl bench tiny --gen-tokens 4,6 --json``: two configurations (g4 and g6), parsed."""
    result = run_cli(home, *RUN, "--gen-tokens", "4,6", "--json")
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def _key(config: dict) -> str:
    return BenchConfig.model_validate(config).key


def _baseline(document: dict, path: Path, gen_tokens: dict[int, int]) -> Path:
    """``document`` as a baseline recorded with other generation lengths (``{old: new}``), keys included."""
    doc = json.loads(json.dumps(document))
    renamed: dict[str, str] = {}
    for config in [*doc["configs"], *(s["config"] for s in doc["summary"])]:
        old = _key(config)
        config["gen_tokens"] = gen_tokens.get(config["gen_tokens"], config["gen_tokens"])
        renamed[old] = _key(config)
    for summary in doc["summary"]:
        summary["key"] = renamed[summary["key"]]
    for sample in doc["samples"]:
        sample["config"] = renamed[sample["config"]]
    path.write_text(json.dumps(doc))
    return path


def _keys(document: dict) -> dict[int, str]:
    return {s["config"]["gen_tokens"]: s["key"] for s in document["summary"]}


def test_gate_matching_nothing_fails_with_its_own_exit_code(home: Path, document: dict, tmp_path: Path) -> None:
    other = _baseline(document, tmp_path / "other.json", {4: 16, 6: 32})  # recorded with other settings
    result = run_cli(home, *RUN, "--gen-tokens", "4,6", "--baseline", str(other), "--max-regression", "100000%")
    assert result.code == ExitCode.NOTHING_COMPARED == 8, result.stderr
    assert "error: the regression gate compared nothing" in result.stderr
    assert str(other) in result.stderr and "\nhint: " in result.stderr
    assert "warning:" not in result.stderr
    now, old = _keys(document), _keys(json.loads(other.read_text()))
    report = result.stderr[result.stderr.index("nothing was compared"):]
    assert "2 configuration(s) of this run not in the baseline" in report
    assert "2 configuration(s) only in the baseline" in report
    for key in [*now.values(), *old.values()]:
        assert f"  {key}\n" in report
    assert "tiny" in result.stdout  # the results are still reported


def test_gate_matching_nothing_json_verdict(home: Path, document: dict, tmp_path: Path) -> None:
    other = _baseline(document, tmp_path / "other.json", {4: 16, 6: 32})
    result = run_cli(home, *RUN, "--gen-tokens", "4,6", "--json", "--baseline", str(other))
    assert result.code == 8, result.stderr
    json.loads(result.stdout)  # stdout is still the result document
    verdict = json.loads(next(line for line in result.stderr.splitlines() if line.startswith("{")))
    assert verdict["passed"] is False and verdict["compared"] == [] and verdict["regressions"] == []
    assert verdict["unmatched"] == {"only_current": list(_keys(document).values()),
                                    "only_baseline": list(_keys(json.loads(other.read_text())).values())}
    assert verdict["baseline"] == str(other)


def test_gate_lists_unmatched_on_both_sides_when_some_matched(home: Path, document: dict, tmp_path: Path) -> None:
    partial = _baseline(document, tmp_path / "partial.json", {6: 8})  # g4 in both, g6 now only, g8 old only
    now, old = _keys(document), _keys(json.loads(partial.read_text()))
    args = (*RUN, "--gen-tokens", "4,6", "--baseline", str(partial), "--max-regression", "100000%")

    text = run_cli(home, *args)
    assert text.code == 0, text.stderr
    assert "compared 1 configuration(s)" in text.stderr
    assert f"1 configuration(s) of this run not in the baseline (not compared):\n  {now[6]}\n" in text.stderr
    assert f"1 configuration(s) only in the baseline (not run now):\n  {old[8]}\n" in text.stderr

    as_json = run_cli(home, *args, "--json")
    assert as_json.code == 0, as_json.stderr
    verdict = json.loads(next(line for line in as_json.stderr.splitlines() if line.startswith("{")))
    assert verdict["passed"] is True and verdict["compared"] == [now[4]]
    assert verdict["unmatched"] == {"only_current": [now[6]], "only_baseline": [old[8]]}
