"""How slmctl reads when the command line itself is wrong, and how its help pages read.

Owns the Click command classes every command and group is built with (:class:`Command`,
:class:`Group`): help with plain metavars (``NAME``, ``[PROMPT]...``, ``KEY=VALUE``, ``N``, ``PATH``)
instead of Typer's raw type names (``<list[str]>``, ``{name}``), and examples that stay on one line
each (an indented paragraph of a help text or epilog is printed as written, prose is wrapped without
breaking at a hyphen); :func:`epilog` renders a command's examples, kept as data (a list of command
lines), into its epilog. And :func:`command_line_error`, which turns Click's parse errors (unknown
command or option, missing argument, bad value) into a :class:`~slmctl.errors.CommandLineError`: the
house's ``error:`` line, the usage line and a ``hint:`` (with a did-you-mean), exit code 2, printed by
the one error reporter in :mod:`slmctl.cli.app` instead of Click's ``Usage: ... Error: ...`` block.
"""

from __future__ import annotations

import difflib
import inspect
import re
import textwrap
from typing import Any

from typer import BadParameter, TyperException
from typer.core import TyperCommand, TyperGroup

from slmctl.errors import CommandLineError, OperationFailed, SlmctlError

__all__ = ["Command", "Group", "command_line_error", "epilog"]

#: Metavars by parameter name (the same name means the same thing in every command), then by type.
_NAMED = {"param": "KEY=VALUE", "provider_option": "KEY=VALUE", "home": "DIR", "file": "FILE", "config": "FILE",
          "output": "FILE", "device": "DEVICE", "backend": "BACKEND", "format_": "FORMAT", "quant": "QUANT",
          "quantize": "QUANT", "host": "ADDR:PORT", "keep_alive": "DURATION", "preload": "MODEL", "sha256": "HEX",
          "name": "NAME", "size": "SIZE", "type_": "TYPE", "system": "TEXT", "temperature": "T"}
_TYPED = {"int": "N", "float": "NUMBER", "Path": "PATH", "str": "TEXT", "list[str]": "TEXT", "list[int]": "N"}


def _plain_metavars(params: list[Any]) -> None:
    for param in params:
        if param.metavar is not None or getattr(param, "is_flag", False) or getattr(param, "count", False):
            continue
        if getattr(getattr(param, "type_descriptor", None), "is_choice", False):
            continue  # Typer lists the choices themselves
        name = param.name or ""
        if param.param_type_name == "argument":
            upper = name.upper()
            param.metavar = upper[:-1] if param.nargs != 1 and upper.endswith("S") else upper
        else:
            bare = param.bare_type() if hasattr(param, "bare_type") else "str"
            param.metavar = _NAMED.get(name) or _TYPED.get(bare, "VALUE")


def _argument_usage(param: Any) -> str:
    name = param.metavar or (param.name or "").upper()
    name = name if param.required else f"[{name}]"
    return name + ("..." if param.nargs != 1 else "")


def _write_text(formatter: Any, text: str) -> None:
    """Paragraphs: prose is wrapped (never at a hyphen: ``--gen-tokens`` stays whole), an indented one
    (an example command line) is printed as written."""
    formatter.write_paragraph()
    with formatter.indentation():
        pad = " " * formatter.current_indent
        out = []
        for paragraph in text.strip("\n").split("\n\n"):
            if paragraph[:1].isspace():
                out.append("\n".join(pad + line for line in paragraph.splitlines()))
            elif paragraph.strip():
                out.append(textwrap.fill(" ".join(paragraph.split()), width=max(formatter.width, 40),
                                         initial_indent=pad, subsequent_indent=pad, break_on_hyphens=False,
                                         break_long_words=False))
        formatter.write("\n\n".join(out) + "\n")


class _Help:
    """The help text and epilog of a command or group, written by :func:`_write_text`; parse errors
    carry the context (for the usage line) even when Click's parser raised them without one."""

    help: str | None
    epilog: str | None

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)  # type: ignore[misc]
        except TyperException as error:
            if getattr(error, "ctx", False) is None:
                error.ctx = ctx  # type: ignore[attr-defined]
            raise

    def format_help_text(self, ctx: Any, formatter: Any) -> None:
        text = inspect.cleandoc(self.help).partition("\f")[0] if self.help else ""
        if text:
            _write_text(formatter, text)

    def format_epilog(self, ctx: Any, formatter: Any) -> None:
        if self.epilog:
            _write_text(formatter, self.epilog)


class Command(_Help, TyperCommand):
    """A command whose help reads ``NAME [PROMPT]...`` and ``--param KEY=VALUE``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain_metavars(self.params)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        return pieces + [_argument_usage(p) for p in self.get_params(ctx) if p.param_type_name == "argument"]

    def format_options(self, ctx: Any, formatter: Any) -> None:
        args, opts = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                args.append((param.metavar + ("..." if param.nargs != 1 else ""), record[1]))
            else:
                opts.append(record)
        for title, rows in (("Arguments", args), ("Options", opts)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


class Group(_Help, TyperGroup):
    """A group of commands, with the same help style as :class:`Command`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain_metavars(self.params)


def epilog(examples: list[str], notes: str = "") -> str:
    """The epilog of a help page: ``Examples:`` with one indented command line each (printed as
    written), then ``notes`` (prose paragraphs, wrapped)."""
    text = "Examples:\n\n" + "\n\n".join("  " + example for example in examples)
    return text + ("\n\n" + notes if notes else "")


def _closest(word: str, choices: list[str]) -> str | None:
    close = difflib.get_close_matches(word.lower(), choices, n=1, cutoff=0.6)
    return close[0] if close else None


def _sentence(message: str) -> str:
    """Click's ``Missing argument 'NAME'.`` as the house writes errors: ``missing argument 'NAME'``."""
    message = message.strip().rstrip(".")
    if message[:1].isupper() and not message[1:2].isupper():
        message = message[0].lower() + message[1:]
    return message


def command_line_error(error: Any) -> SlmctlError:
    """The :class:`CommandLineError` for a Click usage error (exit 2); another Click error (a file that
    cannot be opened) becomes an :class:`OperationFailed` with Click's message."""
    message = error.format_message()
    if getattr(error, "exit_code", 1) != 2:
        return OperationFailed(_sentence(message))
    ctx = getattr(error, "ctx", None)
    path = ctx.command_path if ctx is not None else "slmctl"
    is_group = ctx is not None and hasattr(ctx.command, "list_commands")
    guess: str | None = None
    unknown_command = re.match(r"No such command '(.*?)'", message)
    if unknown_command and ctx is not None:
        name = unknown_command.group(1)
        message = f"unknown command '{name}'"
        guess = _closest(name, ctx.command.list_commands(ctx))
    elif type(error).__name__ == "NoSuchOption" and ctx is not None:
        name = str(getattr(error, "option_name", ""))
        message = f"unknown option '{name}'"
        options = {opt.lstrip("-"): opt for param in ctx.command.get_params(ctx)
                   for opt in (*param.opts, *getattr(param, "secondary_opts", ())) if opt.startswith("--")}
        found = _closest(name.lstrip("-"), list(options))
        guess = options[found] if found else None
    elif isinstance(error, BadParameter) and error.param is not None and type(error).__name__ != "MissingParameter":
        message = f"invalid value for {error.param.get_error_hint()}: {_sentence(error.message)}"
    else:
        message = _sentence(message)
    usage = " ".join(ctx.get_usage().split()).removeprefix("Usage: ") if ctx is not None else None
    hint = (f"did you mean '{guess}'? " if guess else "") + (
        f"run '{path} --help' for the {'commands' if is_group else 'options and examples'}")
    return CommandLineError(message, hint, usage=usage)
