"""Values of slmctl's Go ``text/template`` subset (API: :mod:`.gotemplate`; the builtin functions
themselves are in :mod:`.gotemplate_builtins`).

Owns Go's truthiness, how values print (Go's ``fmt`` ``%v``: ``true``, ``1e+06``, ``[a b]``,
``map[k:v]``), Go's ``encoding/json`` form of values (:func:`go_json`), and the arity table of the
builtins ``and or not eq ne lt le gt ge len index slice print printf println`` and Ollama's ``json
currentDate yesterdayDate toTypeScriptType`` (used by the parser).
``None`` stands for Ollama's zero values: false, length 0, and printed as the empty string (by
``{{ . }}``, ``print`` and ``printf`` ``%s``/``%v``); inside a list or map it prints as Go's ``<nil>``.

A value may bring its Go methods: ``go_string()`` (Go's ``String()``: how ``fmt`` prints it),
``go_json()`` (Go's ``MarshalJSON``) and ``to_typescript_type()`` (for ``toTypeScriptType``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

#: name -> (minimum, maximum or None) number of arguments, the piped value included.
ARITY: dict[str, tuple[int, int | None]] = {
    "and": (1, None), "or": (1, None), "not": (1, 1), "len": (1, 1), "index": (1, None), "slice": (1, 4),
    "eq": (2, None), "ne": (2, 2), "lt": (2, 2), "le": (2, 2), "gt": (2, 2), "ge": (2, 2),
    "print": (0, None), "printf": (1, None), "println": (0, None),
    "json": (1, 1), "currentDate": (0, None), "yesterdayDate": (0, None), "toTypeScriptType": (1, 1),
}


class FuncError(Exception):
    """A builtin failed on its arguments; the executor adds the position."""


def truth(value: Any) -> bool:
    """Go's ``if``: false for None, False, zero numbers and empty strings, lists and maps."""
    if value is None:
        return False
    if isinstance(value, (bool, int, float, complex)):
        return value != 0
    if isinstance(value, (str, bytes, list, tuple, Mapping, set, frozenset)):
        return len(value) > 0
    return True


def go_type(value: Any) -> str:
    """The Go type name used in messages and in ``%!d(string=x)``."""
    if value is None:
        return "<nil>"
    for kind, name in ((bool, "bool"), (int, "int"), (float, "float64"), (str, "string"),
                       ((list, tuple), "[]interface {}"), (Mapping, "map[string]interface {}")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def sorted_items(mapping: Mapping[Any, Any]) -> list[tuple[Any, Any]]:
    try:
        keys = sorted(mapping)
    except TypeError:
        keys = sorted(mapping, key=lambda k: (go_type(k), format_value(k)))
    return [(k, mapping[k]) for k in keys]


def go_float(f: float) -> str:
    """Go's ``%v`` of a float64: the shortest digits, in ``%e`` form below 1e-4 and from 1e+06."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    sign, digit_tuple, exp = Decimal(repr(f)).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    point = len(digits) + int(exp)
    neg = "-" if sign else ""
    if point - 1 < -4 or point - 1 >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{neg}{mantissa}e{'-' if point < 1 else '+'}{abs(point - 1):02d}"
    if point <= 0:
        return f"{neg}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return neg + digits + "0" * (point - len(digits))
    return f"{neg}{digits[:point]}.{digits[point:]}"


def stringer_of(value: Any) -> Callable[[], str] | None:
    """A value's Go ``String()`` method, bound (None when it has none)."""
    method = getattr(type(value), "go_string", None)
    return method.__get__(value) if method is not None else None


def format_value(value: Any) -> str:
    """Go's ``fmt`` ``%v`` (``None`` is ``<nil>``)."""
    if value is None:
        return "<nil>"
    stringer = stringer_of(value)
    if stringer is not None:
        return stringer()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(format_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{format_value(k)}:{format_value(v)}" for k, v in sorted_items(value)) + "]"
    return str(value)


def print_value(value: Any) -> str:
    """How ``{{ pipeline }}`` writes a value: like ``%v``, but ``None`` (a zero value) is empty."""
    return "" if value is None else value if isinstance(value, str) else format_value(value)


def go_quote(text: str, quote: str = '"') -> str:
    """Go's ``strconv.Quote`` (``QuoteRune`` with ``quote="'"``)."""
    out = [quote]
    for ch in text:
        if ch in (quote, "\\"):
            out.append("\\" + ch)
        elif ch in "\a\b\f\n\r\t\v":
            out.append("\\" + "abfnrtv"["\a\b\f\n\r\t\v".index(ch)])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")
    return "".join(out) + quote


# --- Ollama's functions -----------------------------------------------------------------------------

_JSON_ESCAPES = {i: f"\\u{i:04x}" for i in (*range(32), ord("<"), ord(">"), ord("&"), 0x2028, 0x2029)} | {
    ord(c): "\\" + e for c, e in zip('"\\\n\r\t\b\f', '"\\nrtbf')}


def json_string(text: str) -> str:
    """A string as Go's ``json.Marshal`` writes it (``<``, ``>``, ``&``, U+2028/9 escaped)."""
    return '"' + text.translate(_JSON_ESCAPES) + '"'


def go_json(value: Any) -> str:
    """Go's ``json.Marshal``: maps with sorted keys, nil as ``null``, floats in shortest form (``e``
    form below 1e-6 and from 1e21); a value's ``go_json()`` method wins."""
    method = getattr(type(value), "go_json", None)
    if method is not None:
        return str(method(value))
    if value is None or isinstance(value, bool):
        return "null" if value is None else "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise FuncError(f"json: unsupported value: {go_float(value)}")
        if value == 0 or 1e-6 <= abs(value) < 1e21:
            return format(Decimal(repr(value)).normalize(), "f")
        return go_float(value).replace("e-0", "e-")
    if isinstance(value, (int, str)):
        return str(value) if isinstance(value, int) else json_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(go_json(v) for v in value) + "]"
    if isinstance(value, Mapping):
        items = sorted(((str(k), v) for k, v in value.items()), key=lambda kv: kv[0])
        return "{" + ",".join(f"{json_string(k)}:{go_json(v)}" for k, v in items) + "}"
    return json_string(format_value(value))


def json_or_empty(value: Any) -> str:
    try:
        return go_json(value)
    except FuncError:
        return ""  # Ollama ignores json.Marshal's error
