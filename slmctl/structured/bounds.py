"""What ``minimum``/``maximum``/``exclusiveMinimum``/``exclusiveMaximum`` allow, as bounds the digit
grammar can write exactly.

Integers are exact in JSON and in Python, so their bounds become the nearest integers inside.
A ``number`` is read back as a float: a decimal ``d`` written by the grammar parses to the float
nearest ``d``, and rounding to nearest is monotonic, so ``d >= s`` with ``float(s) == b`` gives
``float(d) >= b``. The inclusive bound ``b`` is written as ``s = repr(b)``; an exclusive one as a
decimal just past ``b`` whose float is past ``b`` (the neighbouring float's shortest form, so only
decimals that round back onto ``b`` are given up; next to 0, a short decimal such as 1e-6). Integers in
the answer compare exactly, which the same argument covers while bounds stay within 2**53.
"""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from typing import Any

#: Largest magnitude of a ``number`` bound enforced exactly (every integer up to it is a float).
NUMBER_BOUND_LIMIT = 2**53
#: Most digits a bound may take to write out (the grammar spells bounds digit by digit).
MAX_BOUND_DIGITS = 64


def is_number(value: Any) -> bool:
    """A JSON number (not a boolean), finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) or math.isfinite(value)


def integer_bounds(schema: dict[str, Any]) -> tuple[int | None, int | None]:
    """The smallest and largest integers the bounds of ``schema`` allow (None: unbounded)."""
    lows: list[int] = []
    highs: list[int] = []
    if "minimum" in schema:
        lows.append(math.ceil(Fraction(schema["minimum"])))
    if "exclusiveMinimum" in schema:
        lows.append(math.floor(Fraction(schema["exclusiveMinimum"])) + 1)
    if "maximum" in schema:
        highs.append(math.floor(Fraction(schema["maximum"])))
    if "exclusiveMaximum" in schema:
        highs.append(math.ceil(Fraction(schema["exclusiveMaximum"])) - 1)
    return (max(lows) if lows else None), (min(highs) if highs else None)


def _decimal(bound: int | float) -> Decimal:
    return Decimal(bound) if isinstance(bound, int) else Decimal(repr(bound))


def _digits(value: int | Decimal) -> int:
    return len(str(abs(value)) if isinstance(value, int) else format(abs(value), "f").replace(".", ""))


def _past(bound: int | float, direction: int) -> Decimal:
    """A short decimal beyond ``bound`` (direction +1: above, -1: below) whose float is beyond it too:
    the neighbouring float's shortest form, or (when that is long, as next to 0) a nearby round one."""
    neighbour = Decimal(repr(math.nextafter(float(bound), direction * math.inf)))
    if _digits(neighbour) <= 20:
        return neighbour
    start = _decimal(bound)
    step = Decimal(1).scaleb(min(start.as_tuple().exponent, 0) - 6)  # type: ignore[operator]
    while not ((float(start + direction * step) > bound) if direction > 0 else (float(start - step) < bound)):
        step *= 10
    return start + direction * step


def number_bounds(schema: dict[str, Any]) -> tuple[Decimal | None, Decimal | None]:
    """Decimal bounds such that every decimal between them, read as JSON, satisfies ``schema``."""
    lows: list[Decimal] = []
    highs: list[Decimal] = []
    if "minimum" in schema:
        lows.append(_decimal(schema["minimum"]))
    if "exclusiveMinimum" in schema:
        lows.append(_past(schema["exclusiveMinimum"], +1))
    if "maximum" in schema:
        highs.append(_decimal(schema["maximum"]))
    if "exclusiveMaximum" in schema:
        highs.append(_past(schema["exclusiveMaximum"], -1))
    return (max(lows) if lows else None), (min(highs) if highs else None)


def bound_digits(schema: dict[str, Any], integer: bool) -> int:
    """How many digits (integer and fraction) the longest bound takes to write."""
    low, high = integer_bounds(schema) if integer else number_bounds(schema)
    return max((_digits(b) for b in (low, high) if b is not None), default=0)


def bounds_empty(schema: dict[str, Any], integer: bool) -> bool:
    """Whether no value of that kind satisfies the bounds."""
    low, high = integer_bounds(schema) if integer else number_bounds(schema)
    return low is not None and high is not None and low > high
