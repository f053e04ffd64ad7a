"""``main(argv, ctx)``: the CLI's edge runs in process, returns the exit code, reads only the
context's environment and writes only to the context's streams."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from slmctl.cli.app import main
from slmctl.cli.context import AppContext


def _ctx(env: dict[str, str], stdin: str = "") -> AppContext:
    return AppContext.create(env=env, stdin=io.StringIO(stdin), stdout=io.StringIO(), stderr=io.StringIO())


def test_help_and_usage_errors_go_to_the_context_streams(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    ctx = _ctx({"SLMCTL_HOME": str(tmp_path)})
    assert main(["--help"], ctx) == 0
    assert "Usage: slmctl" in ctx.stdout.getvalue()  # type: ignore[attr-defined]
    assert main(["frobnicate"], ctx) == 2
    assert ctx.stderr.getvalue().startswith("error: unknown command 'frobnicate'")  # type: ignore[attr-defined]
    assert main([], ctx) == 2  # the help, on stderr, as Click prints it
    assert "Commands:" in ctx.stderr.getvalue()  # type: ignore[attr-defined]
    assert capsys.readouterr() == ("", "")


def test_the_environment_is_the_contexts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLMCTL_HOME", str(tmp_path / "not-this-one"))
    ctx = _ctx({"SLMCTL_HOME": str(tmp_path / "home"), "SLMCTL_DEBUG": "1"})
    assert main(["list", "--json"], ctx) == 0
    assert json.loads(ctx.stdout.getvalue()) == []  # type: ignore[attr-defined]
    assert main(["show", "nosuch"], ctx) == 3
    assert "Traceback" in ctx.stderr.getvalue()  # SLMCTL_DEBUG from the context's env  # type: ignore[attr-defined]
    assert not (tmp_path / "not-this-one").exists()
