"""Digit-range expressions: the exact text of the integers or decimals inside given bounds.

llama.cpp's grammar has no arithmetic, so a bounded number is written as an expression over digits
(``1[0-9]{2}|2[0-4][0-9]|25[0-5]`` for 100..255). This module owns that construction, for integers
(:func:`integer_range`) and for decimals without exponent (:func:`decimal_range`), as a small
expression tree that renders both as GBNF (for the grammar) and as a Python regex (for tests).
Numbers are written canonically: no leading zeros, no ``-0`` for integers, at most ``max_digits``
integer digits where a side is unbounded and at most ``FRACTION_TAIL`` free fraction digits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

#: Integer digits allowed where a bound is missing (as llama.cpp's own integer rule: 16).
MAX_DIGITS = 16
#: Free fraction digits after the digits a bound pins down.
FRACTION_TAIL = 15


class Expr:
    """A node of a digit expression."""

    def gbnf(self) -> str:
        raise NotImplementedError

    def regex(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class Lit(Expr):
    text: str

    def gbnf(self) -> str:
        return '"' + self.text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    def regex(self) -> str:
        return re.escape(self.text)


@dataclass(frozen=True)
class Digits(Expr):
    """One digit from ``low`` to ``high``, repeated ``least`` to ``most`` times."""

    low: int = 0
    high: int = 9
    least: int = 1
    most: int = 1

    def _times(self) -> str:
        if (self.least, self.most) == (1, 1):
            return ""
        return f"{{{self.least}}}" if self.least == self.most else f"{{{self.least},{self.most}}}"

    def gbnf(self) -> str:
        cls = f"[{self.low}]" if self.low == self.high else f"[{self.low}-{self.high}]"
        return cls + self._times()

    def regex(self) -> str:
        return self.gbnf()


@dataclass(frozen=True)
class Seq(Expr):
    parts: tuple[Expr, ...]

    def gbnf(self) -> str:
        return " ".join(_group(p, p.gbnf()) for p in self.parts)

    def regex(self) -> str:
        return "".join(_group(p, p.regex(), regex=True) for p in self.parts)


@dataclass(frozen=True)
class Alt(Expr):
    options: tuple[Expr, ...]
    optional: bool = False  # the empty text is one more option

    def gbnf(self) -> str:
        return "(" + " | ".join(o.gbnf() for o in self.options) + (")?" if self.optional else ")")

    def regex(self) -> str:
        return "(?:" + "|".join(o.regex() for o in self.options) + (")?" if self.optional else ")")


def _group(part: Expr, text: str, *, regex: bool = False) -> str:
    return f"(?:{text})" if regex and isinstance(part, Seq) else text


def seq(*parts: Expr) -> Expr:
    flat = [p for p in parts if not (isinstance(p, Lit) and not p.text)]
    return flat[0] if len(flat) == 1 else Seq(tuple(flat)) if flat else Lit("")


def alt(options: list[Expr], *, optional: bool = False) -> Expr:
    if len(options) == 1 and not optional:
        return options[0]
    return Alt(tuple(options), optional)


def _any(n: int) -> Expr:
    return Digits(0, 9, n, n) if n else Lit("")


# -- integers -------------------------------------------------------------------------------------
def _at_least(s: str) -> Expr:
    """Digit strings of len(s) that are >= s."""
    if s.strip("0") == "":
        return _any(len(s))
    head = int(s[0])
    options = [seq(Lit(s[0]), _at_least(s[1:]))]
    if head < 9:
        options.append(seq(Digits(head + 1, 9), _any(len(s) - 1)))
    return alt(options)


def _at_most(s: str) -> Expr:
    """Digit strings of len(s) that are <= s."""
    if s.strip("9") == "":
        return _any(len(s))
    head = int(s[0])
    options = [seq(Digits(0, head - 1), _any(len(s) - 1))] if head > 0 else []
    options.append(seq(Lit(s[0]), _at_most(s[1:])))
    return alt(options)


def _same_length(x: str, y: str) -> Expr:
    """Digit strings of len(x) == len(y) from x to y (x <= y)."""
    if x == y:
        return Lit(x)
    p = next(i for i, (a, b) in enumerate(zip(x, y)) if a != b)
    dx, dy, rest = int(x[p]), int(y[p]), len(x) - p - 1
    if x[p + 1:].strip("0") == "" and y[p + 1:].strip("9") == "":
        return seq(Lit(x[:p]), Digits(dx, dy), _any(rest))
    options = [seq(Lit(x[p]), _at_least(x[p + 1:]))]
    if dy - dx >= 2:
        options.append(seq(Digits(dx + 1, dy - 1), _any(rest)))
    options.append(seq(Lit(y[p]), _at_most(y[p + 1:])))
    return seq(Lit(x[:p]), alt(options))


def natural_range(low: int, high: int | None, max_digits: int = MAX_DIGITS) -> Expr | None:
    """Canonical decimal text of the integers low..high (0 <= low; high None: up to max_digits digits)."""
    top = high if high is not None else 10 ** max(max_digits, len(str(low))) - 1
    if low > top:
        return None
    options: list[Expr] = []
    lo_len, hi_len = len(str(low)), len(str(top))
    for length in range(lo_len, hi_len + 1):
        first = max(low, 10 ** (length - 1) if length > 1 else 0)
        last = min(top, 10**length - 1)
        if lo_len < length < hi_len:  # every number of these lengths: one expression for all of them
            if length == lo_len + 1:
                options.append(seq(Digits(1, 9), Digits(0, 9, length - 1, hi_len - 2)))
            continue
        options.append(_same_length(str(first), str(last)))
    return alt(options)


def integer_range(low: int | None, high: int | None, max_digits: int = MAX_DIGITS) -> Expr | None:
    """JSON text of the integers from low to high (None: unbounded on that side); None if empty."""
    if low is not None and high is not None and low > high:
        return None
    options: list[Expr] = []
    if low is None or low < 0:  # negatives: "-" then the magnitude, never "-0"
        magnitudes = natural_range(max(1, -high) if high is not None else 1,
                                   -low if low is not None else None, max_digits)
        if magnitudes is not None:
            options.append(seq(Lit("-"), magnitudes))
    if high is None or high >= 0:
        naturals = natural_range(max(0, low) if low is not None else 0, high, max_digits)
        if naturals is not None:
            options.append(naturals)
    return alt(options) if options else None


# -- decimals -------------------------------------------------------------------------------------
def _split(value: Decimal) -> tuple[int, str]:
    """Integer part and fraction digits (no trailing zeros) of a non-negative decimal."""
    text = format(value, "f")
    whole, _, fraction = text.partition(".")
    return int(whole), fraction.rstrip("0")


_TAIL = Digits(0, 9, 0, FRACTION_TAIL)
_ANY_FRACTION = alt([seq(Lit("."), Digits(0, 9, 1, FRACTION_TAIL))], optional=True)


def _tail_at_least(r: str) -> Expr:
    """Fraction digits still to come after a matched prefix, so that prefix+them >= prefix+r."""
    if not r:
        return _TAIL
    head = int(r[0])
    options = [seq(Lit(r[0]), _tail_at_least(r[1:]))]
    if head < 9:
        options.append(seq(Digits(head + 1, 9), _TAIL))
    return alt(options)


def _tail_at_most(r: str) -> Expr:
    """Fraction digits still to come (maybe none) so that prefix+them <= prefix+r."""
    if not r:
        return Digits(0, 0, 0, FRACTION_TAIL)
    head = int(r[0])
    options = [seq(Digits(0, head - 1), _TAIL)] if head > 0 else []
    options.append(seq(Lit(r[0]), _tail_at_most(r[1:])))
    return alt(options, optional=True)


def _fraction_at_least(f: str) -> Expr:
    return seq(Lit("."), _tail_at_least(f)) if f else _ANY_FRACTION


def _fraction_at_most(f: str) -> Expr:
    """An optional fraction <= 0.f (none at all is 0)."""
    if not f:
        return alt([seq(Lit("."), Digits(0, 0, 1, FRACTION_TAIL))], optional=True)
    head = int(f[0])
    options = [seq(Digits(0, head - 1), _TAIL)] if head > 0 else []
    options.append(seq(Lit(f[0]), _tail_at_most(f[1:])))
    return alt([seq(Lit("."), alt(options))], optional=True)


def _fraction_between(a: str, b: str) -> Expr:
    """An optional fraction from 0.a to 0.b (a <= b as fractions)."""
    if not a:
        return _fraction_at_most(b)
    p = 0
    while p < len(a) and p < len(b) and a[p] == b[p]:
        p += 1
    if p == len(a):  # a is a prefix of b
        return seq(Lit("." + a), _tail_at_most(b[p:]))
    da, db = int(a[p]), int(b[p])
    options = [seq(Lit(a[p]), _tail_at_least(a[p + 1:]))]
    if db - da >= 2:
        options.append(seq(Digits(da + 1, db - 1), _TAIL))
    options.append(seq(Lit(b[p]), _tail_at_most(b[p + 1:])))
    return seq(Lit("." + a[:p]), alt(options))


def _unsigned_decimal(low: Decimal, high: Decimal | None, max_digits: int) -> Expr | None:
    """Decimals from low to high (0 <= low), no exponent."""
    if high is not None and low > high:
        return None
    lo_int, lo_frac = _split(low)
    if high is not None:
        hi_int, hi_frac = _split(high)
        if lo_int == hi_int:
            return seq(Lit(str(lo_int)), _fraction_between(lo_frac, hi_frac))
    options = [seq(Lit(str(lo_int)), _fraction_at_least(lo_frac))]
    middle = natural_range(lo_int + 1, hi_int - 1 if high is not None else None, max_digits)
    if middle is not None:
        options.append(seq(middle, _ANY_FRACTION))
    if high is not None:
        options.append(seq(Lit(str(hi_int)), _fraction_at_most(hi_frac)))
    return alt(options)


def decimal_range(low: Decimal | None, high: Decimal | None, max_digits: int = MAX_DIGITS) -> Expr | None:
    """JSON text (no exponent) of the decimals from low to high (None: unbounded); None if empty."""
    if low is not None and high is not None and low > high:
        return None
    options: list[Expr] = []
    if low is None or low < 0:
        magnitudes = _unsigned_decimal(max(Decimal(0), -high) if high is not None else Decimal(0),
                                       -low if low is not None else None, max_digits)
        if magnitudes is not None:
            options.append(seq(Lit("-"), magnitudes))
    if high is None or high >= 0:
        unsigned = _unsigned_decimal(max(Decimal(0), low) if low is not None else Decimal(0), high, max_digits)
        if unsigned is not None:
            options.append(unsigned)
    return alt(options) if options else None
