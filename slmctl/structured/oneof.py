"""When ``oneOf`` may be enforced as a plain union: branches that no document can match twice.

A grammar can only offer the union of the branches, while ``oneOf`` wants exactly one to match; the
two agree when the branches are pairwise disjoint. Disjointness is proven here, conservatively, by
one of: the JSON types the branches accept do not meet (``integer`` and ``number`` count as one);
both branches are ``const``/``enum`` with no common value; or both are objects (``type``) that require a
property whose ``const``/``enum`` values do not meet (a discriminator). Otherwise :func:`overlapping_pair` names
the pair and the schema is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

_ALL_TYPES = frozenset({"null", "boolean", "number", "string", "array", "object"})
#: Resolves a local ``$ref`` to its target schema.
Resolver = Callable[[str], Any]


def json_type(value: Any) -> str:
    """The JSON type of a Python value loaded from JSON (integers are numbers)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def canonical(value: Any) -> Any:
    """A hashable form in which JSON-schema-equal values are equal (1 == 1.0, True != 1)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (json_type(value), value)
    if isinstance(value, (int, float)):
        return ("number", Decimal(value))
    if isinstance(value, list):
        return ("array", tuple(canonical(v) for v in value))
    return ("object", frozenset((k, canonical(v)) for k, v in value.items()))


def _follow(schema: Any, resolve: Resolver) -> Any:
    seen: set[str] = set()
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and schema["$ref"] not in seen:
        seen.add(schema["$ref"])
        schema = resolve(schema["$ref"])
    return schema


def _declared(schema: dict[str, Any]) -> frozenset[str]:
    """The types the ``type`` keyword allows (all when absent)."""
    declared = schema.get("type")
    if declared is None:
        return _ALL_TYPES
    names = declared if isinstance(declared, list) else [declared]
    return frozenset("number" if name == "integer" else name for name in names)


def values(schema: Any, resolve: Resolver) -> frozenset[Any] | None:
    """The canonical values a ``const``/``enum`` schema allows, or None when it is not one."""
    schema = _follow(schema, resolve)
    if not isinstance(schema, dict) or not ("const" in schema or "enum" in schema):
        return None
    found = [schema["const"]] if "const" in schema else schema["enum"]
    return frozenset(canonical(v) for v in found if json_type(v) in _declared(schema))


def types(schema: Any, resolve: Resolver, depth: int = 0) -> frozenset[str]:
    """JSON types a document matching ``schema`` may have (all of them when unsure)."""
    schema = _follow(schema, resolve)
    if depth > 32:  # a union that refers back to itself: unsure
        return _ALL_TYPES
    if not isinstance(schema, dict):
        return _ALL_TYPES if schema is not False else frozenset()
    found = values(schema, resolve)
    if found is not None:
        return frozenset(kind for kind, _ in found)
    for union in ("anyOf", "oneOf"):
        if union in schema:
            return frozenset().union(*(types(branch, resolve, depth + 1) for branch in schema[union]))
    return _declared(schema)


def _discriminated(a: dict[str, Any], b: dict[str, Any], resolve: Resolver) -> bool:
    if types(a, resolve) | types(b, resolve) != {"object"}:  # a non-object could match both
        return False
    shared = set(a.get("required", ())) & set(b.get("required", ()))
    for name in shared:
        left = values(a.get("properties", {}).get(name), resolve)
        right = values(b.get("properties", {}).get(name), resolve)
        if left is not None and right is not None and not left & right:
            return True
    return False


def disjoint(a: Any, b: Any, resolve: Resolver) -> bool:
    """Whether no document can match both schemas (False when it cannot be proven)."""
    a, b = _follow(a, resolve), _follow(b, resolve)
    if not types(a, resolve) & types(b, resolve):
        return True
    left, right = values(a, resolve), values(b, resolve)
    if left is not None and right is not None:
        return not left & right
    return isinstance(a, dict) and isinstance(b, dict) and _discriminated(a, b, resolve)


def overlapping_pair(branches: list[Any], resolve: Resolver) -> tuple[int, int] | None:
    """The first pair of branches not proven disjoint, or None when all pairs are."""
    for i, left in enumerate(branches):
        for j in range(i + 1, len(branches)):
            if not disjoint(left, branches[j], resolve):
                return i, j
    return None
