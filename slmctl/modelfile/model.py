"""The parsed form of a Modelfile, its error type and the vocabulary both the parser and printer share.

Owns :class:`Modelfile`, :class:`Message`, :class:`ModelfileError` and the tables of instructions,
message roles and the ``REQUIRES`` version syntax. Pure data: no I/O, no runtime imports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from slmctl.errors import InvalidModelFile

#: Every instruction, in the order the printer writes them.
INSTRUCTIONS: tuple[str, ...] = (
    "FROM", "PARAMETER", "TEMPLATE", "SYSTEM", "MESSAGE", "LICENSE", "ADAPTER", "FILE", "REQUIRES",
)

#: The roles a ``MESSAGE`` instruction accepts (lowercase; the parser accepts any case).
ROLES: tuple[str, ...] = ("system", "user", "assistant")

#: ``REQUIRES`` takes ``MAJOR.MINOR`` or ``MAJOR.MINOR.PATCH``, optionally with a ``-pre``/``+build`` suffix.
VERSION_RE = re.compile(r"[0-9]+\.[0-9]+(?:\.[0-9]+)?(?:[-+][0-9A-Za-z.+-]+)?", re.ASCII)


@dataclass(frozen=True)
class Message:
    """One ``MESSAGE`` instruction: a conversation turn the model starts with."""

    role: str
    content: str


@dataclass
class Modelfile:
    """A parsed Modelfile.

    ``parameters`` maps canonical option names (see :mod:`slmctl.options`) to typed values; ``stop``
    is a non-empty list of strings. ``adapters`` and ``files`` hold paths exactly as written (relative
    paths are resolved by the caller against the Modelfile's folder).
    """

    from_: str
    parameters: dict[str, Any] = field(default_factory=dict)
    system: str | None = None
    template: str | None = None
    messages: list[Message] = field(default_factory=list)
    licenses: list[str] = field(default_factory=list)
    adapters: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    requires: str | None = None
    #: Where the TEMPLATE value starts in the file, ``(line, column)`` 1-based, to locate template errors
    #: (None when not parsed from a file); not part of the Modelfile's value.
    template_at: tuple[int, int] | None = field(default=None, compare=False, repr=False)


class ModelfileError(InvalidModelFile):
    """A Modelfile that cannot be parsed (or a value the printer cannot write).

    The message reads ``Modelfile:3:1: unknown instruction 'PARAMETR'`` (file, 1-based line and column);
    ``reason`` is the same text without the location. ``filename``, ``line`` and ``column`` are ``None``
    for printer errors, which have no location.
    """

    def __init__(self, reason: str, hint: str | None = None, *, filename: str | None = None,
                 line: int | None = None, column: int | None = None) -> None:
        where = f"{filename}:{line}:{column}: " if filename is not None and line is not None else ""
        super().__init__(f"{where}{reason}", hint)
        self.reason = reason
        self.filename = filename
        self.line = line
        self.column = column
