"""Lexer of slmctl's Go ``text/template`` subset (the public API is :mod:`slmctl.modelfile.gotemplate`).

Owns :class:`TemplateError` and its hints (with :func:`closest`, the did-you-mean), positions
(``line``/``col`` from a character offset), and the tokens: text chunks (with the ``{{-`` / ``-}}``
trimming already applied and ``{{/* */}}`` comments dropped) and the tokens inside actions, with
literals already decoded to Python values (Go string escapes, raw strings, character constants,
numbers). The rules follow Go's ``text/template/parse/lex.go``; what is outside the subset is rejected
later, by the parser.
"""

from __future__ import annotations

import difflib
import re
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any

from slmctl.errors import InvalidModelFile

SUPPORTED_HINT = (
    "slmctl supports this subset of Go text/template: {{ .Field }}, {{ $x := ... }} / {{ $x = ... }}, "
    "if / else if / else, range / else (with break and continue), with / else, {{/* comments */}}, "
    "{{- -}} trim markers, pipes, and the functions and, or, not, eq, ne, lt, le, gt, ge, len, index, "
    "slice, print, printf, println and Ollama's json, currentDate, yesterdayDate, toTypeScriptType"
)
SYNTAX_HINT = ("fix the TEMPLATE in the Modelfile: actions are written {{ ... }} "
               "and every if, range and with ends with {{ end }}")
RENDER_HINT = "fix the TEMPLATE in the Modelfile: this action fails on the values it was given"

# Token kinds.
TEXT, LEFT, RIGHT, SPACE, EOF = "text", "{{", "}}", "space", "eof"
IDENT, KEYWORD, FIELD, VARIABLE, DOT = "identifier", "keyword", "field", "variable", "dot"
STRING, NUMBER, BOOL, NIL, CHAR = "string", "number", "bool", "nil", "char"
DECLARE, ASSIGN, PIPE, LPAREN, RPAREN = ":=", "=", "|", "(", ")"

KEYWORDS = frozenset({"if", "else", "end", "range", "with", "define", "template", "block", "break", "continue"})
_SPACES = " \t\r\n"
_TERMINATORS = _SPACES + ".,|:)("
_SIMPLE_ESCAPES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92}
_INT64 = 1 << 63


class TemplateError(InvalidModelFile):
    """A TEMPLATE that cannot be parsed or rendered (exit code 4).

    The message reads ``template line 3, col 5: unsupported action 'define'``; ``reason`` is the text
    without the location, ``line`` and ``column`` are 1-based (in characters of the template).
    """

    def __init__(self, reason: str, hint: str | None = None, *, line: int | None = None,
                 column: int | None = None) -> None:
        where = f"template line {line}, col {column}: " if line is not None else ""
        super().__init__(f"{where}{reason}", hint)
        self.reason = reason
        self.line = line
        self.column = column


def closest(word: str, choices: list[str]) -> str | None:
    """The choice ``word`` was most likely meant to be (a different case first), or None."""
    for choice in choices:
        if choice.lower() == word.lower():
            return choice
    lowered = {choice.lower(): choice for choice in choices}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[close[0]] if close else None


def show(text: str, limit: int = 40) -> str:
    """``text`` for a one-line message: control characters escaped, long text shortened."""
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class Source:
    """The template text and the mapping from offsets to positions."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def position(self, offset: int) -> tuple[int, int]:
        line = bisect_right(self._starts, offset)
        return line, offset - self._starts[line - 1] + 1

    def error(self, offset: int, reason: str, hint: str = SYNTAX_HINT) -> TemplateError:
        line, column = self.position(offset)
        return TemplateError(reason, hint, line=line, column=column)


@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    value: Any
    pos: int
    text: str = ""

    def describe(self) -> str:
        if self.kind == EOF:
            return "end of template"
        if self.kind == RIGHT:
            return "'}}'"
        if self.kind == KEYWORD:
            return f"keyword '{self.value}'"
        return f"'{show(self.text)}'"


def _is_alnum(c: str) -> bool:
    return c == "_" or c.isalpha() or c.isdecimal()


def lex(src: Source) -> list[Token]:
    """All tokens of the template, ending with an EOF token. Raises :class:`TemplateError`."""
    text, toks, pos = src.text, [], 0
    while True:
        start = text.find("{{", pos)
        if start < 0:
            if pos < len(text):
                toks.append(Token(TEXT, text[pos:], pos))
            toks.append(Token(EOF, None, len(text)))
            return toks
        trim = text.startswith("-", start + 2) and text[start + 3: start + 4] in tuple(_SPACES)
        chunk = text[pos:start].rstrip(_SPACES) if trim else text[pos:start]
        if chunk:
            toks.append(Token(TEXT, chunk, pos))
        inside = start + (4 if trim else 2)
        if text.startswith("/*", inside):
            pos = _skip_comment(src, start, inside)
        else:
            toks.append(Token(LEFT, None, start, "{{"))
            pos = _Action(src, start, inside, toks).run()


def _right_delim(text: str, p: int) -> int:
    """Length of the right delimiter at ``p`` (2 for ``}}``, 4 for `` -}}``), else 0."""
    if text.startswith("}}", p):
        return 2
    if text[p: p + 1] in tuple(_SPACES) and text.startswith("-}}", p + 1):
        return 4
    return 0


def _after_right(text: str, p: int, length: int) -> int:
    p += length
    if length == 4:
        while p < len(text) and text[p] in _SPACES:
            p += 1
    return p


def _skip_comment(src: Source, start: int, inside: int) -> int:
    end = src.text.find("*/", inside + 2)
    if end < 0:
        raise src.error(start, "unclosed comment: missing */}}")
    length = _right_delim(src.text, end + 2)
    if not length:
        raise src.error(start, "comment ends before closing delimiter: write {{/* ... */}}")
    return _after_right(src.text, end + 2, length)


class _Action:
    """Lexes one action, from after ``{{`` (and its trim marker) to after ``}}``."""

    def __init__(self, src: Source, start: int, p: int, toks: list[Token]) -> None:
        self.src, self.text, self.start, self.p, self.toks = src, src.text, start, p, toks

    def emit(self, kind: str, value: Any, begin: int) -> None:
        self.toks.append(Token(kind, value, begin, self.text[begin: self.p]))

    def at_terminator(self) -> bool:
        c = self.text[self.p: self.p + 1]
        return not c or c in _TERMINATORS or self.text.startswith("}}", self.p)

    def bad_character(self) -> TemplateError:
        c = self.text[self.p]
        return self.src.error(self.p, f"bad character U+{ord(c):04X} '{show(c)}'")

    def run(self) -> int:
        text, depth = self.text, 0
        while True:
            p = self.p
            length = _right_delim(text, p)
            if length:
                if depth:
                    raise self.src.error(p, "unclosed left paren")
                self.toks.append(Token(RIGHT, None, p, "}}"))
                return _after_right(text, p, length)
            if p >= len(text):
                raise self.src.error(self.start, "unclosed action: missing }}")
            c = text[p]
            self.p += 1
            if c in _SPACES:
                while self.p < len(text) and text[self.p] in _SPACES:
                    self.p += 1
                if text.startswith("-}}", self.p):
                    self.p -= 1  # leave the space of " -}}"
                if self.p > p:
                    self.emit(SPACE, None, p)
            elif c == "=":
                self.emit(ASSIGN, None, p)
            elif c == ":":
                if not text.startswith("=", self.p):
                    raise self.src.error(p, "expected :=")
                self.p += 1
                self.emit(DECLARE, None, p)
            elif c == "|":
                self.emit(PIPE, None, p)
            elif c == '"':
                self.quoted(p)
            elif c == "`":
                end = text.find("`", self.p)
                if end < 0:
                    raise self.src.error(p, "unterminated raw quoted string")
                self.p = end + 1
                self.emit(STRING, text[p + 1: end].replace("\r", ""), p)
            elif c == "'":
                self.char_constant(p)
            elif c == "$":
                self.word(p, VARIABLE)
            elif c == "." and not "0" <= text[self.p: self.p + 1] <= "9":
                self.word(p, FIELD)
            elif c in "+-." or "0" <= c <= "9":
                self.number(p)
            elif _is_alnum(c):
                self.word(p, IDENT)
            elif c == "(":
                depth += 1
                self.emit(LPAREN, None, p)
            elif c == ")":
                depth -= 1
                if depth < 0:
                    raise self.src.error(p, "unexpected right paren ')'")
                self.emit(RPAREN, None, p)
            elif c == "/" and text.startswith("*", self.p):
                raise self.src.error(p, "a comment must start right after the delimiter: {{/* ... */}}")
            elif c.isascii() and c.isprintable():
                self.emit(CHAR, c, p)
            else:
                raise self.src.error(p, f"unrecognized character in action: U+{ord(c):04X} '{show(c)}'")

    def word(self, begin: int, kind: str) -> None:
        """An identifier, a ``.field`` or a ``$variable`` (``.`` / ``$`` alone are the dot / root)."""
        while self.p < len(self.text) and _is_alnum(self.text[self.p]):
            self.p += 1
        if not self.at_terminator():
            raise self.bad_character()
        word = self.text[begin: self.p]
        if kind == FIELD:
            self.emit(DOT, None, begin) if word == "." else self.emit(FIELD, word[1:], begin)
        elif kind == VARIABLE:
            self.emit(VARIABLE, word, begin)
        elif word in KEYWORDS:
            self.emit(KEYWORD, word, begin)
        elif word in ("true", "false"):
            self.emit(BOOL, word == "true", begin)
        elif word == "nil":
            self.emit(NIL, None, begin)
        else:
            self.emit(IDENT, word, begin)

    def scan_quoted(self, begin: int, quote: str, what: str) -> str:
        text = self.text
        while True:
            c = text[self.p: self.p + 1]
            self.p += 1
            escaped = c == "\\"
            if escaped:
                c = text[self.p: self.p + 1]
                self.p += 1
            if c in ("", "\n"):
                raise self.src.error(begin, f"unterminated {what}")
            if c == quote and not escaped:
                return text[begin + 1: self.p - 1]

    def quoted(self, begin: int) -> None:
        body = self.scan_quoted(begin, '"', "quoted string")
        units = _unescape(self.src, begin, body, '"')
        data = b"".join(bytes([v]) if is_byte else chr(v).encode("utf-8", "surrogatepass") for is_byte, v in units)
        self.emit(STRING, data.decode("utf-8", "replace"), begin)

    def char_constant(self, begin: int) -> None:
        body = self.scan_quoted(begin, "'", "character constant")
        units = _unescape(self.src, begin, body, "'")
        if len(units) != 1:
            raise self.src.error(begin, f"malformed character constant: '{show(body)}'")
        self.emit(NUMBER, units[0][1], begin)

    def number(self, begin: int) -> None:
        """Scans like Go's ``scanNumber``, then converts: ints (int64) and floats; no complex numbers."""
        text = self.text
        self.p = begin

        def accept(chars: str) -> bool:
            if text[self.p: self.p + 1] and text[self.p] in chars:
                self.p += 1
                return True
            return False

        def accept_run(chars: str) -> None:
            while accept(chars):
                pass

        accept("+-")
        digits = "0123456789_"
        if accept("0"):
            if accept("xX"):
                digits = "0123456789abcdefABCDEF_"
            elif accept("oO"):
                digits = "01234567_"
            elif accept("bB"):
                digits = "01_"
        accept_run(digits)
        if accept("."):
            accept_run(digits)
        if len(digits) == 11 and accept("eE") or len(digits) == 23 and accept("pP"):
            accept("+-")
            accept_run("0123456789_")
        accept("i")
        word = text[begin: self.p]
        if self.p < len(text) and _is_alnum(text[self.p]):
            raise self.src.error(begin, f"bad number syntax: '{show(word + text[self.p])}'")
        if word.endswith("i"):
            raise self.src.error(begin, f"complex numbers are not supported: '{show(word)}'", SUPPORTED_HINT)
        self.emit(NUMBER, _number_value(self.src, begin, word), begin)


def _number_value(src: Source, begin: int, word: str) -> int | float:
    body = word.lstrip("+-")
    hexa = body[:2].lower() == "0x"
    is_float = any(c in body for c in (".pP" if hexa else ".eE"))
    try:
        if not is_float:
            value = int(body, 8) if re.fullmatch(r"0[0-7_]+", body) else int(body, 0)
            value = -value if word.startswith("-") else value
            if not -_INT64 <= value < _INT64:
                raise src.error(begin, f"number out of range: '{show(word)}'")
            return value
        number = float.fromhex(word) if hexa else float(word)
    except ValueError:
        raise src.error(begin, f"bad number syntax: '{show(word)}'") from None
    if number in (float("inf"), float("-inf")):
        raise src.error(begin, f"number out of range: '{show(word)}'")
    return number


def _unescape(src: Source, begin: int, body: str, quote: str) -> list[tuple[bool, int]]:
    """Go escapes in a quoted literal -> (is_byte, value) units; ``\\x`` and octal escapes are bytes."""
    units: list[tuple[bool, int]] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            units.append((False, ord(c)))
            i += 1
            continue
        e, i = body[i + 1], i + 2
        if e in _SIMPLE_ESCAPES:
            units.append((False, _SIMPLE_ESCAPES[e]))
        elif e == quote:
            units.append((False, ord(quote)))
        elif e in "xuU01234567":
            size, base = {"x": (2, 16), "u": (4, 16), "U": (8, 16)}.get(e, (3, 8))
            if base == 8:
                i -= 1
            digits, i = body[i: i + size], i + size
            e = "" if base == 8 else e
            try:
                value = int(digits, base) if len(digits) == size and digits.isascii() and digits.isalnum() else -1
            except ValueError:
                value = -1
            is_byte = e not in ("u", "U")
            if value < 0 or value > (255 if is_byte else 0x10FFFF) or (not is_byte and 0xD800 <= value < 0xE000):
                raise src.error(begin, f"invalid escape '\\{show(e + digits)}' in quoted string")
            units.append((is_byte and value > 127, value))
        else:
            raise src.error(begin, f"invalid escape '\\{show(e)}' in quoted string")
    return units
