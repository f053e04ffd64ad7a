"""The builtin functions of slmctl's Go ``text/template`` subset, and the table the executor calls.

Owns ``printf`` (Go's common verbs), ``print``/``println``, the comparisons ``eq ne lt le gt ge`` with Go's
type rules, ``len``, ``index`` and ``slice``, and :data:`FUNCS`, which also maps Ollama's ``json``,
``currentDate``, ``yesterdayDate`` and ``toTypeScriptType``. Values, printing and JSON are in
:mod:`.gotemplate_funcs`."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from typing import Any

from slmctl.modelfile.gotemplate_funcs import (
    FuncError,
    format_value,
    go_float,
    json_or_empty,
    go_quote,
    go_type,
    print_value,
    sorted_items,
    stringer_of,
    truth,
)


# --- printf -------------------------------------------------------------------------------------

def _fmt_int(n: int, verb: str, flags: str, prec: int | None) -> str | None:
    if verb in "cqU":
        if not 0 <= n <= 0x10FFFF:
            return None
        return chr(n) if verb == "c" else go_quote(chr(n), "'") if verb == "q" else f"U+{n:04X}"
    base = {"v": "d", "d": "d", "x": "x", "X": "X", "o": "o", "O": "o", "b": "b"}.get(verb)
    if base is None:
        return None
    digits = format(abs(n), base)
    if prec is not None:
        digits = digits.zfill(prec)
    prefix = "0o" if verb == "O" else ""
    if "#" in flags and verb in "xXbo":
        prefix = "0" if verb == "o" else "0" + verb
    sign = "-" if n < 0 else "+" if "+" in flags else " " if " " in flags else ""
    return sign + prefix + digits


def _fmt_float(f: float, verb: str, flags: str, prec: int | None) -> str | None:
    if verb not in "vgGeEfF":
        return None
    if verb in "vgG" and prec is None:
        text = go_float(f) if verb != "G" else go_float(f).upper()
    else:
        text = format(f, f".{6 if prec is None else prec}{'g' if verb == 'v' else verb}")
        text = text.replace("inf", "Inf").replace("nan", "NaN")
    if not text.startswith("-") and ("+" in flags or " " in flags):
        text = ("+" if "+" in flags else " ") + text
    return text


def _fmt_one(arg: Any, verb: str, flags: str, width: int | None, prec: int | None, top: bool) -> str:
    """One ``printf`` operand; lists and maps apply the verb to each element, as Go does."""
    stringer = stringer_of(arg)
    if stringer is not None and verb in "sqv":
        arg = stringer()
    if isinstance(arg, (list, tuple)) and verb != "T":
        return "[" + " ".join(_fmt_one(a, verb, flags, width, prec, False) for a in arg) + "]"
    if isinstance(arg, Mapping) and verb != "T":
        return "map[" + " ".join(f"{_fmt_one(k, verb, flags, width, prec, False)}:"
                                 f"{_fmt_one(v, verb, flags, width, prec, False)}"
                                 for k, v in sorted_items(arg)) + "]"
    numeric = False
    text: str | None
    if verb == "T":
        text = go_type(arg)
    elif arg is None:
        text = ("" if top else "<nil>") if verb in "vs" else None
    elif isinstance(arg, bool):
        text = ("true" if arg else "false") if verb in "vt" else None
    elif isinstance(arg, int):
        text, numeric = _fmt_int(arg, verb, flags, prec), verb not in "cqU"
    elif isinstance(arg, float):
        text, numeric = _fmt_float(arg, verb, flags, prec), True
    elif isinstance(arg, str):
        cut = arg if prec is None else arg[:prec]
        if verb == "q" or verb == "v" and "#" in flags:
            text = go_quote(cut)
        elif verb in "xX":
            text = cut.encode("utf-8", "surrogatepass").hex()
            text = text.upper() if verb == "X" else text
        else:
            text = cut if verb in "sv" else None
    else:
        text = str(arg) if verb in "sv" else None
    if text is None:
        return f"%!{verb}({go_type(arg)}={format_value(arg)})" if arg is not None else f"%!{verb}(<nil>)"
    if width is None or len(text) >= width:
        return text
    pad = width - len(text)
    if "-" in flags:
        return text + " " * pad
    if "0" in flags:
        if numeric and text[:1] in "+- ":
            return text[0] + "0" * pad + text[1:]
        return "0" * pad + text
    return " " * pad + text


def sprintf(fmt: Any, *args: Any) -> str:
    """Go's ``fmt.Sprintf`` for the common verbs (``%v %s %d %q %t %f %g %e %x %c %T %%``)."""
    if not isinstance(fmt, str):
        raise FuncError(f"wrong type for value; expected string; got {go_type(fmt)}")
    out: list[str] = []
    used, i, n = 0, 0, len(fmt)
    while i < n:
        j = fmt.find("%", i)
        if j < 0:
            out.append(fmt[i:])
            break
        out.append(fmt[i:j])
        i = j + 1
        flags = ""
        while i < n and fmt[i] in "+-# 0":
            flags, i = flags + fmt[i], i + 1
        k = i
        while i < n and fmt[i] in "0123456789":
            i += 1
        width = int(fmt[k:i]) if i > k else None
        prec = None
        if fmt.startswith(".", i):
            k = i = i + 1
            while i < n and fmt[i] in "0123456789":
                i += 1
            prec = int(fmt[k:i]) if i > k else 0
        if i >= n:
            out.append("%!(NOVERB)")
            break
        verb, i = fmt[i], i + 1
        if verb == "%":
            out.append("%")
        elif used >= len(args):
            out.append(f"%!{verb}(MISSING)")
        else:
            out.append(_fmt_one(args[used], verb, flags, width, prec, True))
            used += 1
    if used < len(args):
        extra = ", ".join(f"{go_type(a)}={format_value(a)}" if a is not None else "<nil>" for a in args[used:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def sprint(*args: Any) -> str:
    """Go's ``fmt.Sprint``: a space between operands when neither is a string."""
    out: list[str] = []
    for i, arg in enumerate(args):
        if i and not isinstance(arg, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(print_value(arg))
    return "".join(out)


def sprintln(*args: Any) -> str:
    return " ".join(print_value(a) for a in args) + "\n"


# --- comparison -----------------------------------------------------------------------------------

def _kind(value: Any) -> str:
    if value is None:
        return "nil"
    for kind, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "string")):
        if isinstance(value, kind):
            return name
    return "other"


def fn_eq(a: Any, *others: Any) -> bool:
    """``eq a b c`` is ``a == b || a == c``; None equals only None; mixed kinds are an error."""
    ka = _kind(a)
    for b in others:
        kb = _kind(b)
        if ka != kb:
            if "nil" in (ka, kb):
                continue
            raise FuncError(f"incompatible types for comparison: {go_type(a)} and {go_type(b)}")
        if ka == "other" and any(isinstance(x, (list, tuple, Mapping)) for x in (a, b)):
            raise FuncError(f"non-comparable type {go_type(a)}")
        if ka == "nil" or a == b:
            return True
    return False


def fn_lt(a: Any, b: Any) -> bool:
    ka, kb = _kind(a), _kind(b)
    for value, kind in ((a, ka), (b, kb)):
        if kind not in ("int", "float", "string"):
            raise FuncError(f"invalid type for comparison: {go_type(value)}")
    if ka != kb:
        raise FuncError(f"incompatible types for comparison: {go_type(a)} and {go_type(b)}")
    return bool(a < b)


def fn_le(a: Any, b: Any) -> bool:
    return fn_lt(a, b) or fn_eq(a, b)


# --- len, index, slice ----------------------------------------------------------------------------

def fn_len(item: Any) -> int:
    """Go's ``len``: strings count UTF-8 bytes; None (a nil list) has length 0."""
    if item is None:
        return 0
    if isinstance(item, str):
        return len(item.encode("utf-8", "surrogatepass"))
    if isinstance(item, (bytes, list, tuple, Mapping)):
        return len(item)
    raise FuncError(f"len of type {go_type(item)}")


def _position(index: Any, size: int, inclusive: bool) -> int:
    if index is None:
        raise FuncError("cannot index slice/array with nil")
    if isinstance(index, bool) or not isinstance(index, int):
        raise FuncError(f"cannot index slice/array with type {go_type(index)}")
    if index < 0 or index > size or index == size and not inclusive:
        raise FuncError(f"index out of range: {index}")
    return index


def fn_index(item: Any, *indexes: Any) -> Any:
    """``index x 1 "k"`` is ``x[1]["k"]``: a missing map key gives None; strings index their bytes."""
    for index in indexes:
        if isinstance(item, Mapping) or item is None and isinstance(index, str):
            try:
                item = item.get(index) if item is not None else None
            except TypeError:
                raise FuncError(f"value has type {go_type(index)}; should be a map key") from None
        elif isinstance(item, (list, tuple, str)) or item is None:
            seq = item.encode("utf-8", "surrogatepass") if isinstance(item, str) else item or ()
            item = seq[_position(index, len(seq), False)]
        else:
            raise FuncError(f"can't index item of type {go_type(item)}")
    return item


def fn_slice(item: Any, *indexes: Any) -> Any:
    """``slice x 1 2`` is ``x[1:2]``; strings are sliced by UTF-8 bytes, as Go does."""
    if item is None:
        item = []
    if isinstance(item, str):
        if len(indexes) == 3:
            raise FuncError("cannot 3-index slice a string")
        seq: Any = item.encode("utf-8", "surrogatepass")
    elif isinstance(item, (list, tuple)):
        seq = item
    else:
        raise FuncError(f"can't slice item of type {go_type(item)}")
    bounds = [_position(index, len(seq), True) for index in indexes]
    if len(bounds) == 3 and bounds[1] > bounds[2]:
        raise FuncError(f"invalid slice index: {bounds[1]} > {bounds[2]}")
    start = bounds[0] if bounds else 0
    end = bounds[1] if len(bounds) > 1 else len(seq)
    if start > end:
        raise FuncError(f"invalid slice index: {start} > {end}")
    part = seq[start:end]
    return part.decode("utf-8", "replace") if isinstance(item, str) else part


FUNCS: dict[str, Callable[..., Any]] = {
    "not": lambda a: not truth(a), "len": fn_len, "index": fn_index, "slice": fn_slice,
    "eq": fn_eq, "ne": lambda a, b: not fn_eq(a, b), "lt": fn_lt, "le": fn_le,
    "gt": lambda a, b: not fn_le(a, b), "ge": lambda a, b: not fn_lt(a, b),
    "print": sprint, "printf": sprintf, "println": sprintln,
    "json": json_or_empty,
    "currentDate": lambda *_format: datetime.date.today().isoformat(),
    "yesterdayDate": lambda *_format: (datetime.date.today() - datetime.timedelta(days=1)).isoformat(),
    "toTypeScriptType": lambda v: v.to_typescript_type() if hasattr(type(v), "to_typescript_type") else "any",
}
