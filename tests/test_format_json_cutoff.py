"""``run --format``: an answer cut off by the token limit is not passed off as JSON (issue 11).

The tiny model never samples EOS, so ``--max-tokens 1`` stops it mid-JSON (``{``) for sure, while a
large limit lets the JSON grammar close the object and end the answer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_runner import run_cli
from slmctl.errors import ExitCode

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"]}


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory, tiny_gguf: Path) -> Path:
    home = tmp_path_factory.mktemp("home")
    assert run_cli(home, "import", str(tiny_gguf), "--name", "tiny").code == 0
    return home


def test_exit_code_is_distinct_and_documented() -> None:
    assert ExitCode.INCOMPLETE == 9
    # An IntEnum member with another's value is only an alias: no other name may share the code.
    assert [name for name, code in ExitCode.__members__.items() if code == ExitCode.INCOMPLETE] == ["INCOMPLETE"]
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert "| 9 | `run --format`" in readme


@pytest.mark.parametrize("fmt", ["json", json.dumps(SCHEMA)], ids=["json", "schema"])
def test_cut_off_answer_warns_and_exits_incomplete(stored: Path, fmt: str) -> None:
    result = run_cli(stored, "run", "tiny", "give me json", "--format", fmt, "--seed", "3", "--max-tokens", "1")
    assert result.code == ExitCode.INCOMPLETE, (result.code, result.stdout, result.stderr)
    assert result.stdout.strip()  # the partial answer stays printed, and stdout holds only it
    with pytest.raises(ValueError):
        json.loads(result.stdout)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: "), result.stderr
    assert "cut off after 1 token(s)" in lines[0] and "--max-tokens" in lines[0]
    assert "not complete JSON" in lines[0]
    assert "error:" not in result.stderr and "Traceback" not in result.stderr


def test_cut_off_answer_that_happens_to_parse_still_warns(stored: Path) -> None:
    # With seed 3, three tokens are "{} " : it parses, but the generation was still stopped by the limit.
    result = run_cli(stored, "run", "tiny", "give me json", "--format", "json", "--seed", "3", "--max-tokens", "3",
                     "--json")
    assert result.code == ExitCode.INCOMPLETE, (result.code, result.stdout, result.stderr)
    body = json.loads(result.stdout)
    assert body["done_reason"] == "length" and body["eval_count"] == 3
    assert result.stderr.startswith("warning: the answer was cut off after 3 token(s)")
    assert "may not be complete JSON" in result.stderr


@pytest.mark.parametrize("fmt", ["json", json.dumps(SCHEMA)], ids=["json", "schema"])
def test_cut_off_answer_with_json_output_reports_length(stored: Path, fmt: str) -> None:
    result = run_cli(stored, "run", "tiny", "give me json", "--format", fmt, "--seed", "3", "--max-tokens", "2",
                     "--json")
    assert result.code == ExitCode.INCOMPLETE, (result.code, result.stdout, result.stderr)
    body = json.loads(result.stdout)  # the --json object itself is intact
    assert body["done_reason"] == "length" and body["eval_count"] == 2
    assert result.stderr.startswith("warning: ") and "cut off" in result.stderr


@pytest.mark.parametrize("fmt", ["json", json.dumps(SCHEMA)], ids=["json", "schema"])
def test_complete_answer_is_silent_and_exits_zero(stored: Path, fmt: str) -> None:
    result = run_cli(stored, "run", "tiny", "give me json", "--format", fmt, "--seed", "3", "--max-tokens", "400",
                     "--json")
    assert result.code == 0, (result.code, result.stdout, result.stderr)
    assert "warning" not in result.stderr
    body = json.loads(result.stdout)
    assert body["done_reason"] == "stop"
    answer = json.loads(body["response"])
    if fmt != "json":
        jsonschema = pytest.importorskip("jsonschema")
        jsonschema.validate(answer, SCHEMA)


def test_cut_off_by_the_context_names_the_context(stored: Path) -> None:
    # The prompt is 32 tokens: a 33-token context leaves room for one token, "{".
    result = run_cli(stored, "run", "tiny", "give me json", "--format", "json", "--seed", "3", "--param", "num_ctx=33")
    assert result.code == ExitCode.INCOMPLETE, (result.code, result.stdout, result.stderr)
    assert "by the end of the context" in result.stderr and "not complete JSON" in result.stderr
    assert "num_ctx" in result.stderr
