"""The Modelfile parser: text -> :class:`~slmctl.modelfile.model.Modelfile`.

Owns the grammar (Ollama's, plus ``FILE`` and ``REQUIRES``):

* a UTF-8 BOM at the start and CRLF line endings are tolerated (CRLF is read as LF everywhere,
  including inside ``\"\"\"`` values); lines whose first non-blank character is ``#`` and blank lines
  are ignored; instructions are case-insensitive and may come in any order.
* a value is *bare* (the rest of the line, trailing whitespace stripped), ``"..."`` (one line; ``\\"``
  and ``\\\\`` are escapes, any other backslash is kept as written) or ``\"\"\"...\"\"\"`` (verbatim,
  may span lines; when the closing run has more than three quotes, the extra leading ones belong to the
  value, so a value may end with ``"``). Only whitespace may follow a closing quote on its line.
* ``FROM`` exactly once; ``PARAMETER`` names and values are checked against :mod:`slmctl.options`
  (``stop`` accumulates, other names: the last wins); ``SYSTEM``, ``TEMPLATE`` and ``REQUIRES``: the
  last wins; ``MESSAGE``, ``LICENSE``, ``ADAPTER`` and ``FILE`` accumulate in order.

Every problem is a :class:`ModelfileError` located as ``file:line:column`` (1-based; columns count
characters, not bytes, and ignore the BOM).
"""

from __future__ import annotations

import bisect
import difflib
from typing import Any

from slmctl.errors import UsageError
from slmctl.modelfile.model import INSTRUCTIONS, ROLES, VERSION_RE, Message, Modelfile, ModelfileError
from slmctl.options import REPEATABLE_KEYS, canonical_key, parse_value

#: How each instruction is written, for hints.
SYNTAX: dict[str, str] = {
    "FROM": "FROM <model name or path>",
    "PARAMETER": "PARAMETER <name> <value>",
    "TEMPLATE": "TEMPLATE <template>",
    "SYSTEM": "SYSTEM <text>",
    "MESSAGE": "MESSAGE <system|user|assistant> <text>",
    "LICENSE": "LICENSE <text>",
    "ADAPTER": "ADAPTER <path>",
    "FILE": "FILE <path>",
    "REQUIRES": "REQUIRES <version>",
}

_TRIPLE = '"""'


class _Source:
    """The normalised text plus offset -> (line, column) mapping and error construction."""

    def __init__(self, text: str, filename: str) -> None:
        self.text = text.removeprefix("\ufeff").replace("\r\n", "\n")
        self.filename = filename
        self.line_starts = [0] + [i + 1 for i, c in enumerate(self.text) if c == "\n"]

    def line_of(self, pos: int) -> int:
        return bisect.bisect_right(self.line_starts, pos)

    def position(self, pos: int) -> tuple[int, int]:
        """``(line, column)`` of an offset, both 1-based."""
        line = self.line_of(pos)
        return line, pos - self.line_starts[line - 1] + 1

    def error(self, pos: int, reason: str, hint: str | None = None) -> ModelfileError:
        line, column = self.position(pos)
        return ModelfileError(reason, hint, filename=self.filename, line=line, column=column)

    def line_end(self, pos: int) -> int:
        end = self.text.find("\n", pos)
        return len(self.text) if end < 0 else end

    def skip_blanks(self, pos: int, end: int) -> int:
        while pos < end and self.text[pos].isspace():
            pos += 1
        return pos

    def word_end(self, pos: int, end: int) -> int:
        while pos < end and not self.text[pos].isspace():
            pos += 1
        return pos

    def read_value(self, start: int, end: int) -> tuple[str, int]:
        """Read the value starting at ``start`` (a non-blank character before ``end``, the line end).

        Returns the value and the offset where the next line starts.
        """
        text = self.text
        if text.startswith(_TRIPLE, start):
            close = text.find(_TRIPLE, start + 3)
            if close < 0:
                raise self.error(start, 'unterminated """ value', 'close the value with """ (it starts here)')
            after = close + 3
            while after < len(text) and text[after] == '"':
                after += 1
            value = text[start + 3:after - 3]
            return value, self._after_closing(after, '"""')
        if text[start] == '"':
            chars: list[str] = []
            i = start + 1
            while i < end:
                c = text[i]
                if c == '"':
                    return "".join(chars), self._after_closing(i + 1, '"')
                if c == "\\" and i + 1 < end:
                    nxt = text[i + 1]
                    chars.append(nxt if nxt in '"\\' else c + nxt)
                    i += 2
                    continue
                chars.append(c)
                i += 1
            raise self.error(start, 'unterminated " value',
                             'close the value with " on the same line, or use """ for text over several lines')
        return text[start:end].rstrip(), end + 1

    def _after_closing(self, pos: int, quote: str) -> int:
        end = self.line_end(pos)
        rest = self.skip_blanks(pos, end)
        if rest < end:
            raise self.error(rest, f"unexpected text after the closing {quote}",
                             "a value ends at its closing quote; put anything else on a new line")
        return end + 1


def _closest(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"did you mean '{close[0]}'? " if close else ""


class _Builder:
    """Accumulates instructions into a :class:`Modelfile`."""

    def __init__(self, src: _Source) -> None:
        self.src = src
        self.from_: str | None = None
        self.from_pos = 0
        self.parameters: dict[str, Any] = {}
        self.fields: dict[str, Any] = {"system": None, "template": None, "requires": None}
        self.template_at: tuple[int, int] | None = None
        self.lists: dict[str, list[Any]] = {"MESSAGE": [], "LICENSE": [], "ADAPTER": [], "FILE": []}

    def instruction(self, name: str, kw_pos: int, start: int, end: int) -> int:
        """Parse the arguments of ``name`` (between ``start`` and the line end ``end``); return the next offset."""
        src = self.src
        if start >= end:
            raise src.error(kw_pos, f"{name} needs a value", f"expected {SYNTAX[name]}")
        if name == "PARAMETER":
            return self._parameter(start, end)
        if name == "MESSAGE":
            return self._message(start, end)
        value, nxt = src.read_value(start, end)
        if name == "FROM":
            if self.from_ is not None:
                raise src.error(kw_pos, "FROM given twice",
                                f"a Modelfile has exactly one FROM; the first is on line {src.line_of(self.from_pos)}")
            self.from_, self.from_pos = self._path(value, start, name), kw_pos
        elif name in ("SYSTEM", "TEMPLATE"):
            self.fields[name.lower()] = value
            if name == "TEMPLATE":
                self.template_at = src.position(start + (3 if src.text.startswith(_TRIPLE, start)
                                                         else 1 if src.text[start] == '"' else 0))
        elif name == "REQUIRES":
            if not VERSION_RE.fullmatch(value):
                raise src.error(start, f"invalid REQUIRES version {value!r}",
                                "expected the minimum slmctl version, such as REQUIRES 0.1.0")
            self.fields["requires"] = value
        elif name == "LICENSE":
            self.lists[name].append(value)
        else:  # ADAPTER, FILE
            self.lists[name].append(self._path(value, start, name))
        return nxt

    def _path(self, value: str, pos: int, name: str) -> str:
        if not value.strip():
            raise self.src.error(pos, f"{name} needs a non-empty value", f"expected {SYNTAX[name]}")
        return value

    def _parameter(self, start: int, end: int) -> int:
        src = self.src
        name_end = src.word_end(start, end)
        raw_name = src.text[start:name_end]
        try:
            key = canonical_key(raw_name)
        except UsageError as exc:
            raise src.error(start, exc.message, exc.hint) from None
        value_pos = src.skip_blanks(name_end, end)
        if value_pos >= end:
            raise src.error(start, f"PARAMETER {raw_name} needs a value", f"expected {SYNTAX['PARAMETER']}")
        raw, nxt = src.read_value(value_pos, end)
        try:
            value = parse_value(key, raw)
        except UsageError as exc:
            raise src.error(value_pos, exc.message, exc.hint) from None
        if key in REPEATABLE_KEYS:
            self.parameters[key] = list(self.parameters.get(key, [])) + list(value)
        else:
            self.parameters[key] = value
        return nxt

    def _message(self, start: int, end: int) -> int:
        src = self.src
        role_end = src.word_end(start, end)
        raw_role = src.text[start:role_end]
        role = raw_role.lower()
        if role not in ROLES:
            raise src.error(start, f"unknown MESSAGE role {raw_role!r}",
                            f"{_closest(role, ROLES)}expected one of: {', '.join(ROLES)}")
        value_pos = src.skip_blanks(role_end, end)
        if value_pos >= end:
            raise src.error(start, f"MESSAGE {role} needs a text", f"expected {SYNTAX['MESSAGE']}")
        content, nxt = src.read_value(value_pos, end)
        self.lists["MESSAGE"].append(Message(role, content))
        return nxt

    def build(self) -> Modelfile:
        if self.from_ is None:
            raise self.src.error(0, "missing FROM instruction",
                                 f"a Modelfile needs exactly one {SYNTAX['FROM']}, e.g. FROM phi4:mini")
        return Modelfile(
            from_=self.from_, parameters=self.parameters, system=self.fields["system"],
            template=self.fields["template"], messages=self.lists["MESSAGE"], licenses=self.lists["LICENSE"],
            adapters=self.lists["ADAPTER"], files=self.lists["FILE"], requires=self.fields["requires"],
            template_at=self.template_at,
        )


def parse_modelfile(text: str, *, filename: str = "Modelfile") -> Modelfile:
    """Parse Modelfile ``text``; ``filename`` is only used in error messages.

    Raises :class:`ModelfileError` (exit code 4) for any problem, and nothing else.
    """
    src = _Source(text, filename)
    builder = _Builder(src)
    pos = 0
    while pos < len(src.text):
        end = src.line_end(pos)
        kw_pos = src.skip_blanks(pos, end)
        if kw_pos >= end or src.text[kw_pos] == "#":
            pos = end + 1
            continue
        kw_end = src.word_end(kw_pos, end)
        keyword = src.text[kw_pos:kw_end]
        name = keyword.upper() if keyword.isascii() else keyword
        if name not in INSTRUCTIONS:
            raise src.error(kw_pos, f"unknown instruction {keyword!r}",
                            f"{_closest(name, INSTRUCTIONS)}expected one of: {', '.join(INSTRUCTIONS)}")
        pos = builder.instruction(name, kw_pos, src.skip_blanks(kw_end, end), end)
    return builder.build()
