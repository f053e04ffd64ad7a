"""The Typer command tree, the global options, and the one place errors become exit codes (Click's
command-line errors included: :mod:`slmctl.cli.usage` words them, :func:`_report` prints them).

Command modules are small and import their services lazily, inside the command body, so that
``slmctl --help`` never imports a runtime (or even pydantic).

:func:`main` is the CLI's edge: ``main(argv, ctx) -> exit code`` runs in process, reads only ``ctx.env``
and writes only to ``ctx``'s streams (Click's own output, help and usage, included); the console
script (and ``python -m slmctl``) is ``sys.exit(main())``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Optional

import typer

from slmctl import __version__
from slmctl.cli import (
    bench, copy, create, doctor, embed, export, import_, list_, ps, pull, remove, run, serve, show, stop, verify,
)
from slmctl.cli.context import AppContext
from slmctl.cli.keys import keys_app
from slmctl.cli.usage import Command, Group, command_line_error, epilog
from slmctl.errors import CommandLineError, ExitCode, Interrupted, SlmctlError

#: The examples of ``slmctl --help``, one command line each.
EXAMPLES = [
    "slmctl import ./model.gguf --name mymodel",
    'slmctl run mymodel "Explain quantum computing"',
    'cat notes.txt | slmctl run mymodel "Summarise this" --json',
]

app = typer.Typer(
    name="slmctl",
    cls=Group,
    help="Run small language models locally: GGUF through llama.cpp, ONNX through ONNX Runtime GenAI, "
    "one shared model store.",
    epilog=epilog(EXAMPLES, "Exit codes: 0 ok, 1 failure, 2 usage, 3 model not found, 4 invalid model file, "
                  "5 network, 6 integrity, 7 device unavailable, 8 bench --baseline compared nothing, 9 run --format "
                  "answer not complete JSON, 130 interrupted."),
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(ctx: typer.Context, value: bool) -> None:
    if value:
        typer.echo(f"slmctl {__version__}", file=ctx.obj.stdout if isinstance(ctx.obj, AppContext) else None)
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
    base = ctx.obj if isinstance(ctx.obj, AppContext) else AppContext.create()
    ctx.obj = base.with_options(home=home, debug=debug)


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


def _report(error: BaseException, debug: bool, stderr: IO[str]) -> int:
    """Print ``error:``/``hint:`` lines (and the traceback with --debug) to ``stderr``; return the exit code."""
    if debug:
        traceback.print_exception(type(error), error, error.__traceback__, file=stderr)
    if isinstance(error, SlmctlError):
        print(f"error: {error.message}", file=stderr)
        if isinstance(error, CommandLineError) and error.usage:
            print(f"usage: {error.usage}", file=stderr)
        if error.hint:
            print(f"hint: {error.hint}", file=stderr)
        if debug and error.details:
            print(error.details.rstrip(), file=stderr)
        return int(error.exit_code)
    cause = f"{type(error).__name__}: {error}"
    print(f"error: unexpected failure: {cause}", file=stderr)
    if not debug:
        print("hint: run again with --debug for the full traceback", file=stderr)
    return int(ExitCode.FAILURE)


def main(argv: list[str] | None = None, ctx: AppContext | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``) with ``ctx`` (default: this process's
    environment and streams); return the exit code. Every error is reported here, on ``ctx.stderr``."""
    args = sys.argv[1:] if argv is None else list(argv)
    app_ctx = ctx if ctx is not None else AppContext.create()
    debug = "--debug" in args or app_ctx.env.get("SLMCTL_DEBUG", "").lower() in {"1", "true", "yes", "on"}
    try:
        with _streams(app_ctx):
            return _invoke(args, app_ctx)
    except KeyboardInterrupt:
        code = _report(Interrupted(), debug, app_ctx.stderr)
    except BrokenPipeError:
        # The reader went away (`slmctl run ... | head`): exit quietly, as other Unix tools do.
        _silence_stdout(app_ctx)
        return int(ExitCode.FAILURE)
    except Exception as error:  # noqa: BLE001 - the CLI edge: every error becomes an exit code
        code = _report(error, debug, app_ctx.stderr)
    app_ctx.stderr.flush()
    return code


@contextlib.contextmanager
def _streams(app_ctx: AppContext) -> Iterator[None]:
    """Click writes its help and usage to ``sys.stdout``/``sys.stderr``: point those at the context's
    streams while the command line runs (a no-op for the console script, whose streams they are)."""
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = app_ctx.stdin, app_ctx.stdout, app_ctx.stderr
    try:
        yield
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved


def _invoke(args: list[str], app_ctx: AppContext) -> int:
    """Run the command line; Click's own errors (a bad command line) become slmctl errors here.

    Click runs in non-standalone mode so that it prints nothing itself: an unknown command or option,
    a missing argument or a bad value becomes a :class:`~slmctl.errors.CommandLineError` (exit 2),
    reported like every other error. ``slmctl`` alone (or ``slmctl models``) still prints the help.
    """
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name="slmctl", standalone_mode=False, obj=app_ctx)
    except typer.Abort:
        raise KeyboardInterrupt() from None
    except typer.TyperException as error:  # Click's exceptions (Typer vendors Click)
        if type(error).__name__ == "NoArgsIsHelpError":
            error.show(file=app_ctx.stderr)  # type: ignore[attr-defined]
            return int(getattr(error, "exit_code", ExitCode.USAGE))
        raise command_line_error(error) from error
    # typer.Exit and --help/--version come back as their exit code; a command's own return value is not one
    return result if isinstance(result, int) and not isinstance(result, bool) else int(ExitCode.OK)


def _silence_stdout(app_ctx: AppContext) -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, app_ctx.stdout.fileno())
    except (OSError, ValueError):
        pass
