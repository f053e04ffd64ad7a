"""JSON-schema ``pattern`` -> GBNF, for the part of Python's regex language whose meaning is certain.

Validators test a pattern with ``re.search`` on the *decoded* string, while the grammar writes JSON
text; llama.cpp's own converter copies the regex into the grammar (so ``.`` may emit a raw ``"``) and
needs ``^...$``. This module parses the pattern with Python's own regex parser and writes, for the
constructs listed below, a grammar whose every string is matched: characters a class or ``.`` allows
are written raw when JSON permits it (so text and value agree), quotes, backslashes and control
characters only where the pattern names them, as JSON escapes; ``\\d``, ``\\w``, ``\\s`` produce their
ASCII members (``\\s``: the space). Anything else (flags, lookarounds, backreferences, ``\\b``, anchors
inside the pattern, possessive or atomic groups, repeats of what may be empty) is refused with
:class:`PatternError`.

Supported: literals, ``.``, classes (ranges, negation, ``\\d\\w\\s`` and their negations), groups,
``|``, ``* + ? {m} {m,} {m,n}`` (greedy or lazy, counts up to :data:`MAX_COUNT`), ``^``/``\\A`` at the
start and ``$``/``\\Z`` at the end (without them the match may start or end anywhere).
"""

from __future__ import annotations

import re
from typing import Any

from slmctl.structured.strings import SAFE_CHAR, UNSAFE_RANGES, char_class, is_safe, json_text, literal

try:  # Python 3.11+
    from re import _constants as sre
    from re import _parser as sre_parse
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as sre  # type: ignore[no-redef]
    import sre_parse  # type: ignore[no-redef]

#: The largest repeat count accepted (llama.cpp expands counted repeats into rules).
MAX_COUNT = 100
_ASCII_SAFE = [(0x20, 0x21), (0x23, 0x5B), (0x5D, 0x7E)]  # printable ASCII but the quote and backslash
_DIGIT = [(0x30, 0x39)]
_WORD = [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)]
_SPACE = [(0x20, 0x20)]
#: Category -> (ASCII members it surely matches, whether it is a negated category).
_CATEGORIES = {
    sre.CATEGORY_DIGIT: (_DIGIT, False), sre.CATEGORY_NOT_DIGIT: (_DIGIT, True),
    sre.CATEGORY_WORD: (_WORD, False), sre.CATEGORY_NOT_WORD: (_WORD, True),
    sre.CATEGORY_SPACE: (_SPACE, False), sre.CATEGORY_NOT_SPACE: (_SPACE, True),
}
_STARTS = (sre.AT_BEGINNING, sre.AT_BEGINNING_STRING)
_ENDS = (sre.AT_END, sre.AT_END_STRING)


class PatternError(ValueError):
    """The pattern is outside the supported subset; the message says which construct."""


def _minus(ranges: list[tuple[int, int]], removed: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = list(ranges)
    for r_lo, r_hi in removed:
        out = [piece for lo, hi in out for piece in ((lo, min(hi, r_lo - 1)), (max(lo, r_hi + 1), hi))
               if piece[0] <= piece[1]]
    return out


def _category(code: Any) -> list[tuple[int, int]]:
    """ASCII characters Python's category surely matches (for negated ones: the printable others)."""
    if code not in _CATEGORIES:
        raise PatternError(f"the class escape {code} is not supported")
    members, negated = _CATEGORIES[code]
    return _minus(_ASCII_SAFE, members) if negated else members


def _class(items: list[tuple[Any, Any]]) -> str:
    negated = bool(items) and items[0][0] is sre.NEGATE
    ranges: list[tuple[int, int]] = []
    categories: list[tuple[int, int]] = []
    for op, av in items[1:] if negated else items:
        if op is sre.LITERAL:
            ranges.append((av, av))
        elif op is sre.RANGE:
            ranges.append(av)
        elif op is sre.CATEGORY:
            categories += _category(av)
        else:
            raise PatternError(f"the class member {op} is not supported")
    if negated and categories:  # complement of a category: keep to printable ASCII, whose membership is plain
        allowed = _minus(_ASCII_SAFE, ranges + categories)
        options = [char_class(allowed)] if allowed else []
    elif negated:
        return char_class(ranges + list(UNSAFE_RANGES), negate=True)
    else:
        safe = _minus(ranges, list(UNSAFE_RANGES)) + categories
        options = [char_class(safe)] if safe else []
        unsafe = {cp for lo, hi in _minus(ranges, _minus(ranges, list(UNSAFE_RANGES))) for cp in range(lo, hi + 1)}
        options += [literal(json_text(chr(cp))) for cp in sorted(unsafe) if cp < 0x110000 and not is_safe(cp)]
    if not options:
        raise PatternError("a character class matches no character that can be written")
    return options[0] if len(options) == 1 else "(" + " | ".join(options) + ")"


def _repeat(least: int, most: int, body: Any) -> str:
    if body.getwidth()[0] == 0:
        raise PatternError("a repeat of something that may be empty (write (a?)* as a*)")
    if least > MAX_COUNT or (most != sre.MAXREPEAT and most > MAX_COUNT):
        raise PatternError(f"repeat counts above {MAX_COUNT}")
    unbounded = most == sre.MAXREPEAT
    if (least, unbounded) == (0, True):
        suffix = "*"
    elif (least, unbounded) == (1, True):
        suffix = "+"
    elif (least, most) == (0, 1):
        suffix = "?"
    elif unbounded:
        suffix = f"{{{least},}}"
    else:
        suffix = f"{{{least}}}" if least == most else f"{{{least},{most}}}"
    return f"({_sequence(list(body))}){suffix}"


def _node(op: Any, av: Any) -> str:
    if op is sre.LITERAL:
        return literal(json_text(chr(av)))
    if op is sre.NOT_LITERAL:
        return char_class([(av, av), *UNSAFE_RANGES], negate=True)
    if op is sre.ANY:
        return SAFE_CHAR
    if op is sre.IN:
        return _class(av)
    if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
        return _repeat(*av)
    if op is sre.SUBPATTERN:
        _, add_flags, del_flags, body = av
        if add_flags or del_flags:
            raise PatternError("inline flags such as (?i:...)")
        return f"({_sequence(list(body))})"
    if op is sre.BRANCH:
        return "(" + " | ".join(_sequence(list(b)) for b in av[1]) + ")"
    if op is sre.AT:
        raise PatternError("anchors other than ^ at the start and $ at the end (write ^(a|b)$, not ^a|b$)")
    raise PatternError(f"the regex construct {str(op).lower()} is not supported")


def _sequence(items: list[tuple[Any, Any]]) -> str:
    parts: list[str] = []
    text = ""
    for op, av in items:
        if op is sre.LITERAL:
            text += json_text(chr(av))
            continue
        if text:
            parts.append(literal(text))
            text = ""
        parts.append(_node(op, av))
    if text:
        parts.append(literal(text))
    return " ".join(parts) if parts else '""'


def pattern_gbnf(pattern: str) -> str:
    """GBNF for the inside of a JSON string (no quotes) whose value ``re.search(pattern, value)`` matches."""
    try:
        re.compile(pattern)
        parsed = sre_parse.parse(pattern)
    except (re.error, RecursionError) as exc:
        raise PatternError(f"it is not a valid regex ({exc})") from exc
    if parsed.state.flags & ~sre.SRE_FLAG_UNICODE:
        raise PatternError("inline flags such as (?i)")
    items = list(parsed)
    anchored_start = bool(items) and items[0][0] is sre.AT and items[0][1] in _STARTS
    if anchored_start:
        items = items[1:]
    anchored_end = bool(items) and items[-1][0] is sre.AT and items[-1][1] in _ENDS
    if anchored_end:
        items = items[:-1]
    parts = [] if anchored_start else [f"{SAFE_CHAR}*"]
    if items:
        parts.append(_sequence(items))
    if not anchored_end:
        parts.append(f"{SAFE_CHAR}*")
    return " ".join(parts) if parts else '""'
