"""One error language across the CLI (issue 11, item 9), through the real entry point.

Click's own errors read like every other error (``error:``, the usage line, ``hint:``, exit 2); help pages
show plain metavars and unbroken example lines; an unknown model name gets a "did you mean" in every
command that takes one; ``rm`` reports a missing name once; the wrong kind of model is exit 2 for ``embed``
as for ``run``; ``--provider-option`` on a GGUF model warns; ``pull --json`` ends a failure with an error event.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer

from cli_runner import Result, run_cli


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def stored(home: Path, tiny_gguf: Path) -> Path:
    assert run_cli(home, "import", str(tiny_gguf), "--name", "tiny").code == 0
    return home


def usage_error(result: Result) -> list[str]:
    """The three lines of a command-line error: ``error:``, ``usage:``, ``hint:``; exit 2, nothing of Click's."""
    assert result.code == 2, (result.code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("error: ") and lines[1].startswith("usage: slmctl ") and lines[2].startswith("hint: ")
    assert "Usage:" not in result.stderr and "Error:" not in result.stderr and "Try '" not in result.stderr
    assert result.stdout == ""
    return lines


@pytest.mark.parametrize(("args", "error", "usage", "hint"), [
    (("serv",), "error: unknown command 'serv'", "usage: slmctl [OPTIONS] COMMAND [ARGS]...",
     "hint: did you mean 'serve'? run 'slmctl --help' for the commands"),
    (("frobnicate",), "error: unknown command 'frobnicate'", "usage: slmctl [OPTIONS] COMMAND [ARGS]...",
     "hint: run 'slmctl --help' for the commands"),
    (("run", "tiny", "--sytem", "x"), "error: unknown option '--sytem'", "usage: slmctl run [OPTIONS] NAME [PROMPT]...",
     "hint: did you mean '--system'? run 'slmctl run --help' for the options and examples"),
    (("cp", "a"), "error: missing argument 'DESTINATION'", "usage: slmctl cp [OPTIONS] SOURCE DESTINATION",
     "hint: run 'slmctl cp --help' for the options and examples"),
    (("rm",), "error: missing argument 'NAME'", "usage: slmctl rm [OPTIONS] NAME...", None),
    (("run", "tiny", "--max-tokens", "many"), "error: invalid value for '--max-tokens'", "usage: slmctl run", None),
    (("run", "tiny", "--system"), "error: option '--system' requires an argument", "usage: slmctl run", None),
    (("show", "a", "b"), "error: got unexpected extra argument(s) (b)", "usage: slmctl show [OPTIONS] NAME", None),
    (("models", "tset"), "error: unknown command 'tset'", "usage: slmctl models [OPTIONS] COMMAND [ARGS]...",
     "hint: did you mean 'test'?"),
    (("--homee", "x", "list"), "error: unknown option '--homee'", "usage: slmctl [OPTIONS] COMMAND",
     "hint: did you mean '--home'?"),
])
def test_command_line_errors_speak_the_house_language(home: Path, args: tuple[str, ...], error: str, usage: str,
                                                      hint: str | None) -> None:
    lines = usage_error(run_cli(home, *args))
    assert lines[0].startswith(error) and lines[1].startswith(usage), lines
    assert hint is None or lines[2].startswith(hint), lines


def test_debug_adds_a_traceback_to_a_usage_error_only_with_debug(home: Path) -> None:
    assert "Traceback" not in run_cli(home, "run", "--bogus").stderr
    debug = run_cli(home, "--debug", "run", "--bogus")
    assert debug.code == 2 and "error: unknown option '--bogus'" in debug.stderr


def test_help_and_version_still_exit_0(home: Path) -> None:
    for args in (("--help",), ("run", "--help"), ("models", "test", "-h"), ("--version",)):
        result = run_cli(home, *args)
        assert result.code == 0 and result.stdout and not result.stderr, (args, result.stderr)


def _all_helps() -> dict[str, tuple[str, str]]:
    """Every command's help page and its epilog source, rendered by the app's own command classes."""
    from slmctl.cli.app import app

    root = typer.main.get_command(app)
    pages: dict[str, tuple[str, str]] = {}

    def walk(command: typer.core.TyperGroup | typer.core.TyperCommand, ctx: object, path: str) -> None:
        pages[path] = (command.get_help(ctx), command.epilog or "")  # type: ignore[arg-type]
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, sub.make_context(name, ["--help"], parent=ctx, resilient_parsing=True), f"{path} {name}")

    walk(root, root.make_context("slmctl", ["--help"], resilient_parsing=True), "slmctl")
    return pages


def test_help_pages_show_plain_metavars_and_whole_example_lines() -> None:
    pages = _all_helps()
    assert len(pages) > 15
    for path, (page, epilog) in pages.items():
        raw = re.findall(r"<(?:str|int|float|path|list\[[a-z]+\]|bool)>|\{[a-z_]+\}", page)
        assert not raw, (path, raw)
        for line in epilog.splitlines():
            if line.startswith("  slmctl") or line.startswith("  cat ") or line.startswith("  echo "):
                assert any(out.strip() == line.strip() for out in page.splitlines()), (path, line)
    run_page = pages["slmctl run"][0]
    assert run_page.startswith("Usage: slmctl run [OPTIONS] NAME [PROMPT]...")
    assert "--param KEY=VALUE" in run_page and "--max-tokens N" in run_page and "PROMPT..." in run_page
    assert "--home DIR" in pages["slmctl"][0]
    assert "--gen-tokens tokens" in " ".join(pages["slmctl bench"][0].split())  # prose never breaks at a hyphen


def test_help_through_the_entry_point(home: Path) -> None:
    result = run_cli(home, "create", "--help")
    assert result.code == 0
    assert "Usage: slmctl create [OPTIONS] NAME" in result.stdout and "-f, --file FILE" in result.stdout
    assert "    slmctl create enterprise-assistant -f modelfiles/enterprise-assistant/Modelfile\n" in result.stdout


@pytest.mark.parametrize("args", [
    ("show", "tyni"), ("rm", "tyni"), ("cp", "tyni", "copy"), ("embed", "tyni", "hello"), ("bench", "tyni"),
])
def test_unknown_model_names_get_a_did_you_mean(stored: Path, args: tuple[str, ...]) -> None:
    result = run_cli(stored, *args)
    assert result.code == 3, (result.code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert lines == ["error: model 'tyni:latest' not found",
                     "hint: did you mean 'tiny'? run 'slmctl list' to see the models in the store"], lines


def test_a_catalog_name_that_is_not_stored_says_how_to_get_it(home: Path) -> None:
    result = run_cli(home, "show", "qwen2.5:0.5b")
    assert result.code == 3 and "'slmctl pull qwen2.5:0.5b' downloads it" in result.stderr


def test_rm_removes_what_exists_and_reports_each_missing_name_once(stored: Path) -> None:
    assert run_cli(stored, "cp", "tiny", "tiny-q8").code == 0
    result = run_cli(stored, "rm", "tiny-q8", "nosuch")
    assert result.code == 3
    assert result.stdout.startswith("deleted 'tiny-q8:latest'")
    assert result.stderr.strip().splitlines() == ["error: model 'nosuch:latest' not found",
                                                  "hint: run 'slmctl list' to see the models in the store"]
    several = run_cli(stored, "rm", "nosuch", "tyni", "nosuch")
    assert several.code == 3 and several.stdout == ""
    assert several.stderr.strip().splitlines() == [
        "error: models 'nosuch:latest' and 'tyni:latest' not found",
        "hint: did you mean 'tiny'? run 'slmctl list' to see the models in the store"]
    assert [m["name"] for m in json.loads(run_cli(stored, "list", "--json").stdout)] == ["tiny:latest"]


def test_the_wrong_kind_of_model_is_a_usage_error_for_embed_as_for_run(stored: Path, tiny_onnx: Path) -> None:
    assert run_cli(stored, "import", str(tiny_onnx), "--name", "gen").code == 0
    result = run_cli(stored, "embed", "gen", "hello")
    assert result.code == 2 and result.stdout == ""
    assert result.stderr.startswith("error: model 'gen:latest' is a text generator: it cannot embed\nhint: ")


def test_provider_option_on_a_gguf_model_warns(stored: Path) -> None:
    result = run_cli(stored, "run", "tiny", "hi", "--max-tokens", "1", "--param", "num_thread=2",
                     "--provider-option", "device_id=0")
    assert result.code == 0, result.stderr
    assert ("warning: --provider-option applies to ONNX models only; 'tiny:latest' is a gguf model, so it is "
            "ignored") in result.stderr
    plain = run_cli(stored, "run", "tiny", "hi", "--max-tokens", "1", "--param", "num_thread=2")
    assert "provider-option" not in plain.stderr


@pytest.mark.parametrize(("name", "env", "code"), [
    ("nosuch-model-xyz", {}, 3),
    ("qwen2.5:0.5b", {"SLMCTL_OFFLINE": "1"}, 5),
])
def test_pull_json_ends_a_failure_with_an_error_event(home: Path, name: str, env: dict[str, str], code: int) -> None:
    result = run_cli(home, "pull", name, "--json", env=env)
    assert result.code == code
    last = json.loads(result.stdout.strip().splitlines()[-1])
    assert last["status"] == "error" and last["error"]
    assert result.stderr.startswith(f"error: {last['error']}\n")


def test_a_runtime_that_cannot_be_imported_is_exit_7_on_both_backends(home: Path, tmp_path: Path, tiny_gguf: Path,
                                                                      tiny_onnx: Path) -> None:
    """A broken install of either runtime: the same error class and exit code (7, unavailable)."""
    fake = tmp_path / "broken"
    for package in ("llama_cpp", "onnxruntime_genai"):
        (fake / package).mkdir(parents=True)
        (fake / package / "__init__.py").write_text('raise ImportError("broken install")\n')
    assert run_cli(home, "import", str(tiny_gguf), "--name", "g").code == 0
    assert run_cli(home, "import", str(tiny_onnx), "--name", "o").code == 0
    for model in ("g", "o"):
        # a subprocess: PYTHONPATH only reaches a fresh interpreter's imports
        result = run_cli(home, "run", model, "hi", "--max-tokens", "2", env={"PYTHONPATH": str(fake)}, process=True)
        assert result.code == 7, (model, result.stderr)
        assert result.stderr.startswith("error: ") and "hint: " in result.stderr
