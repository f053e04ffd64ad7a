"""GBNF building blocks for JSON strings whose decoded value is exactly what the grammar counted.

llama.cpp matches grammars per code point, and JSON text is not its value: ``"\\u0061"`` is ``a``,
a raw control character is not JSON at all, and an escaped surrogate pair is one character but two
grammar steps. This module owns the pieces that keep text and value in step: the one-character rule
(:data:`CHAR_RULE`), the raw-character class (:func:`char_class`), literals (:func:`literal`), the
exact calendar ``date`` format (:data:`FORMAT_RULES`), and object keys that differ from a set of
names (:func:`key_not_in`).

Known limit (llama.cpp's, not fixable in a grammar): the grammar sees code points, and llama.cpp
decodes byte-fallback tokens without rejecting overlong three/four-byte forms or encoded surrogates
(``E0 82 80``, ``ED A0 80``); a model that emitted such bytes would have them replaced by U+FFFD
when decoded, changing a string's length. Trained models do not emit them.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Code points never written raw inside a JSON string: the quote, the backslash, C0 controls (JSON
#: forbids them), DEL (with it excluded, llama.cpp's prefix check rejects overlong forms of ASCII) and
#: values past U+10FFFF (which only invalid UTF-8 reaches).
UNSAFE_RANGES: tuple[tuple[int, int], ...] = ((0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C), (0x7F, 0x7F),
                                              (0x110000, 0x1FFFFF))
_HEX = "[0-9a-fA-F]"
_YEAR = '([1-9] [0-9]{3} | "0" [1-9] [0-9]{2} | "00" [1-9] [0-9] | "000" [1-9])'
_LEAP = '("0" [48] | [2468] [048] | [13579] [26])'  # two digits, a multiple of 4 other than 00
_LEAP_YEAR = f'([0-9]{{2}} {_LEAP} | {_LEAP} "00")'
_DAY28 = '("0" [1-9] | "1" [0-9] | "2" [0-8])'
#: Calendar-exact formats (llama.cpp's own ``date`` admits 2023-02-31); time as in llama.cpp.
FORMAT_RULES: dict[str, str] = {
    "date": (
        f'({_YEAR} "-" (("0" [13578] | "1" [02]) "-" ({_DAY28} | "29" | "3" [01])'
        f' | ("0" [469] | "11") "-" ({_DAY28} | "29" | "30") | "02-" {_DAY28}) | {_LEAP_YEAR} "-02-29")'
    ),
    "time": (
        '(([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ("." [0-9]{3})?'
        ' ("Z" | [+-] ([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9]))'
    ),
    "uuid": "(" + ' "-" '.join(f"{_HEX}{{{n}}}" for n in (8, 4, 4, 4, 12)) + ")",
}
FORMAT_RULES["date-time"] = f'{FORMAT_RULES["date"]} "T" {FORMAT_RULES["time"]}'
#: The formats enforced (``string`` values only).
FORMATS = frozenset(FORMAT_RULES)


def _escape_code_point(cp: int) -> str:
    """A code point as it may appear in a GBNF literal or character class."""
    if cp < 0x80 and chr(cp).isalnum():
        return chr(cp)
    if cp < 0x100:
        return f"\\x{cp:02X}"
    return f"\\u{cp:04X}" if cp < 0x10000 else f"\\U{cp:08X}"


def char_class(ranges: Iterable[tuple[int, int]], *, negate: bool = False) -> str:
    """A GBNF character class of code point ranges (every member escaped)."""
    body = "".join(_escape_code_point(lo) + (f"-{_escape_code_point(hi)}" if hi > lo else "") for lo, hi in ranges)
    return f"[{'^' if negate else ''}{body}]"


#: Any one raw character that may stand unescaped in a JSON string.
SAFE_CHAR = char_class(UNSAFE_RANGES, negate=True)
#: One JSON string character: a safe raw code point, or an escape that decodes to exactly one code
#: point (no surrogate escapes: a pair is one character of the value but two steps of the grammar).
CHAR_RULE = (SAFE_CHAR + r' | "\\" (["\\/bfnrt] | "u" ([0-9a-cA-CeEfF] [0-9a-fA-F]{3} | [dD] [0-7] [0-9a-fA-F]{2}))')
_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def is_safe(cp: int) -> bool:
    return not any(lo <= cp <= hi for lo, hi in UNSAFE_RANGES)


def json_text(char: str) -> str:
    """How one character of a string value is written inside the JSON string."""
    if is_safe(ord(char)):
        return char
    return _JSON_ESCAPES.get(char) or f"\\u{ord(char):04x}"


def literal(text: str) -> str:
    """A GBNF literal matching exactly ``text``."""
    escaped = (("\\" + c if c in '"\\' else c) if " " <= c <= "~" else _escape_code_point(ord(c)) for c in text)
    return '"' + "".join(escaped) + '"'


def key_not_in(names: Iterable[str], safe_char: str = SAFE_CHAR) -> str:
    """GBNF for a quoted object key, written with raw characters only (so its text is its value), that
    equals none of ``names``.

    Walks a trie of the names: at each node the key may end (unless a name ends there), go on with a
    character that leaves the trie (then any characters), or follow a branch of the trie.
    """
    trie: dict[str, dict] = {}
    for name in names:
        node = trie
        for char in name:
            node = node.setdefault(char, {})
        node[""] = {}

    def walk(node: dict[str, dict]) -> str:
        options = [] if "" in node else ['"\\""']
        children = sorted(c for c in node if c)
        leave = char_class([(ord(c), ord(c)) for c in children] + list(UNSAFE_RANGES), negate=True)
        options.append(f'{leave} {safe_char}* "\\""')
        options += [f"{literal(c)} {walk(node[c])}" for c in children if is_safe(ord(c))]
        return "(" + " | ".join(options) + ")"

    return '"\\"" ' + walk(trie) + " space"
