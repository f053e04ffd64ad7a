"""The Typer command tree, the global options, and the one place errors become exit codes (Click's
command-line errors included: :mod:`slmctl.cli.usage` words them, :func:`_report` prints them).

Command modules are small and import their services lazily, inside the command body, so that
``slmctl --help`` never imports a runtime (or even pydantic).
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer

from slmctl import __version__
from slmctl.cli import (
    bench, copy, create, doctor, embed, export, import_, list_, ps, pull, remove, run, serve, show, stop, verify,
)
from slmctl.cli.context import AppContext
from slmctl.cli.keys import keys_app
from slmctl.cli.usage import Command, Group, command_line_error
from slmctl.errors import CommandLineError, ExitCode, Interrupted, SlmctlError

app = typer.Typer(
    name="slmctl",
    cls=Group,
    help="Run small language models locally: GGUF through llama.cpp, ONNX through ONNX Runtime GenAI, "
    "one shared model store.",
    epilog="Examples:\n\n  slmctl import ./model.gguf --name mymodel\n\n  slmctl run mymodel \"Explain quantum computing\"\n\n"
    "  cat notes.txt | slmctl run mymodel \"Summarise this\" --json\n\n"
    "Exit codes: 0 ok, 1 failure, 2 usage, 3 model not found, 4 invalid model file, 5 network, "
    "6 integrity, 7 device unavailable, 8 bench --baseline compared nothing, 9 run --format answer not "
    "complete JSON, 130 interrupted.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"slmctl {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    ctx: typer.Context,
    home: Optional[Path] = typer.Option(
        None, "--home", help="Root of everything slmctl stores (env: SLMCTL_HOME).", show_default=False
    ),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and runtime logs on errors (env: SLMCTL_DEBUG)."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Global options, shared by every command."""
    ctx.obj = AppContext.create(home=home, debug=debug)


def _guard(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn Ctrl-C inside a command into :class:`Interrupted` (Typer would report it as exit 1)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except KeyboardInterrupt:
            raise Interrupted() from None

    return wrapper


for _module in (import_, export, create, list_, show, remove, copy, verify, pull, run, embed, serve, ps, stop, doctor,
                bench):
    app.command(**_module.COMMAND, cls=Command)(_guard(_module.command))
app.add_typer(bench.models_app, name="models")
app.add_typer(keys_app, name="keys")


def _report(error: BaseException, debug: bool) -> int:
    """Print ``error:``/``hint:`` lines (and the traceback with --debug); return the exit code."""
    if debug:
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    if isinstance(error, SlmctlError):
        print(f"error: {error.message}", file=sys.stderr)
        if isinstance(error, CommandLineError) and error.usage:
            print(f"usage: {error.usage}", file=sys.stderr)
        if error.hint:
            print(f"hint: {error.hint}", file=sys.stderr)
        if debug and error.details:
            print(error.details.rstrip(), file=sys.stderr)
        return int(error.exit_code)
    cause = f"{type(error).__name__}: {error}"
    print(f"error: unexpected failure: {cause}", file=sys.stderr)
    if not debug:
        print("hint: run again with --debug for the full traceback", file=sys.stderr)
    return int(ExitCode.FAILURE)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or os.environ.get("SLMCTL_DEBUG", "").lower() in {"1", "true", "yes", "on"}
    try:
        code = _invoke(args)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        sys.exit(_report(Interrupted(), debug))
    except BrokenPipeError:
        # The reader went away (`slmctl run ... | head`): exit quietly, as other Unix tools do.
        _silence_stdout()
        sys.exit(int(ExitCode.FAILURE))
    except Exception as error:  # noqa: BLE001 - the CLI edge: every error becomes an exit code
        sys.exit(_report(error, debug))
    sys.exit(code)


def _invoke(args: list[str]) -> int:
    """Run the command line; Click's own errors (a bad command line) become slmctl errors here.

    Click runs in non-standalone mode so that it prints nothing itself: an unknown command or option,
    a missing argument or a bad value becomes a :class:`~slmctl.errors.CommandLineError` (exit 2),
    reported like every other error. ``slmctl`` alone (or ``slmctl models``) still prints the help.
    """
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name="slmctl", standalone_mode=False)
    except typer.Abort:
        raise KeyboardInterrupt() from None
    except typer.TyperException as error:  # Click's exceptions (Typer vendors Click)
        if type(error).__name__ == "NoArgsIsHelpError":
            error.show()  # type: ignore[attr-defined]
            return int(getattr(error, "exit_code", ExitCode.USAGE))
        raise command_line_error(error) from error
    # typer.Exit and --help/--version come back as their exit code; a command's own return value is not one
    return result if isinstance(result, int) and not isinstance(result, bool) else int(ExitCode.OK)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass
