"""The JSON-schema subset slmctl enforces, and the check that refuses everything outside it.

Grammar-constrained decoding can only promise what the grammar encodes, and a keyword the grammar
ignores is a promise broken silently. So :func:`check_json_format` walks a schema and raises
:class:`UsageError` (exit 2, HTTP 400) naming the keyword and its place (a JSON pointer) for anything
outside the subset of :mod:`slmctl.structured.keywords`, for keyword values of the wrong kind, and for
combinations the grammar cannot honour (keywords beside ``$ref``/``anyOf``/``oneOf``/``const``/``enum``,
overlapping ``oneOf`` branches, ``required`` names missing from ``properties``, empty ranges,
left-recursive ``$ref``).
Annotations (``title``, ``description``, ... and ``x-`` extensions) are accepted and have no effect.
"""

from __future__ import annotations

import json
from typing import Any

from slmctl.errors import UsageError
from slmctl.structured.bounds import MAX_BOUND_DIGITS, NUMBER_BOUND_LIMIT, bound_digits, bounds_empty
from slmctl.structured.bounds import is_number
from slmctl.structured.keywords import ANNOTATIONS, FAMILY_KEYWORDS, MAX_COUNT, REFUSED, SUPPORTED, TYPES
from slmctl.structured.keywords import declared_types, has_type
from slmctl.structured.oneof import overlapping_pair
from slmctl.structured.patterns import PatternError, pattern_gbnf
from slmctl.structured.pointers import join, refuse, resolve_ref, where
from slmctl.structured.strings import FORMATS

_LEADS = {"$ref": (), "anyOf": (), "oneOf": (), "const": ("type",), "enum": ("type",)}
_LEAD_HINTS = {"$ref": "move it into the referenced schema", "anyOf": "move it into every branch",
               "oneOf": "move it into every branch"}


def _count(schema: dict[str, Any], keyword: str, pointer: str) -> int | None:
    value = schema.get(keyword)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise _bad(keyword, pointer, "a non-negative integer")
    if value is not None and value > MAX_COUNT:
        raise refuse(keyword, pointer, "use a smaller limit", f": counts above {MAX_COUNT} are not enforced")
    return value


def _bad(keyword: str, pointer: str, what: str) -> UsageError:
    return UsageError(f"JSON schema keyword '{keyword}' at {where(pointer)} must be {what}")


def _unsatisfiable(keyword: str, pointer: str, why: str) -> UsageError:
    return UsageError(f"JSON schema keyword '{keyword}' at {where(pointer)} leaves no valid value: {why}",
                      "fix the schema: no answer could match it")


class _Checker:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.checked: set[str] = set()
        self.heads: dict[str, list[str]] = {}  # schema -> schemas it starts with (no text before them)
        self.refs: list[str] = []
        self.nested_ids: list[str] = []

    def resolve(self, ref: str) -> Any:
        return resolve_ref(self.root, ref)[1]

    def schema(self, node: Any, pointer: str, *, allow_false: bool = False) -> None:
        if node is False and not allow_false:
            raise UsageError(f"the JSON schema at {where(pointer)} is false: no value can match it",
                             "remove it or give it a schema")
        if isinstance(node, bool) or pointer in self.checked:
            return
        if not isinstance(node, dict):
            raise UsageError(f"the JSON schema at {where(pointer)} must be an object or a boolean, "
                             f"not {type(node).__name__}")
        self.checked.add(pointer)
        if pointer and "$id" in node:
            self.nested_ids.append(pointer)
        core = [k for k in node if k not in ANNOTATIONS and not k.startswith("x-")]
        for keyword in core:
            if keyword in REFUSED:
                raise refuse(keyword, pointer, REFUSED[keyword])
            if keyword not in SUPPORTED:
                raise UsageError(f"unknown JSON schema keyword '{keyword}' at {where(pointer)}",
                                 "remove it or fix its spelling: unknown keywords are refused, not ignored")
        for lead, allowed in _LEADS.items():
            extra = [k for k in core if lead in node and k not in (lead, "$defs", "definitions", *allowed)]
            if extra:
                raise refuse(extra[0], pointer, _LEAD_HINTS.get(lead, "only 'type' may stand beside it"),
                             f" beside '{lead}' (it would be ignored)")
        for container in ("$defs", "definitions"):
            if container in node:
                if not isinstance(node[container], dict):
                    raise _bad(container, pointer, "an object of schemas")
                for name, sub in node[container].items():
                    self.schema(sub, join(pointer, container, name))
        self._types(node, pointer)
        self._values(node, pointer)
        self._unions(node, pointer)
        if "$ref" in node:
            self._ref(node["$ref"], pointer)
        types = declared_types(node) or []
        if "string" in types:
            self._string(node, pointer)
        for numeric in ("integer", "number"):
            if numeric in types:
                self._number(node, pointer, numeric)
        if "array" in types:
            self._array(node, pointer)
        if "object" in types:
            self._object(node, pointer)

    def _types(self, node: dict[str, Any], pointer: str) -> None:
        declared = node.get("type")
        names = declared if isinstance(declared, list) else [declared]
        if declared is not None and (not names or any(n not in TYPES for n in names) or len(set(names)) < len(names)):
            raise _bad("type", pointer, "one of " + ", ".join(TYPES) + " or a list of them (each once)")
        present = {f: [w for w in words if w in node] for f, words in FAMILY_KEYWORDS.items()}
        present = {f: words for f, words in present.items() if words}
        if declared is None and len(present) > 1:
            words = ", ".join(w for ws in present.values() for w in ws)
            raise UsageError(f"the JSON schema at {where(pointer)} has keywords for several types ({words})",
                             "add a 'type' (or a list of types)")
        families = {"number" if n == "integer" else n for n in names}
        for family, words in present.items():
            if declared is not None and family not in families:
                raise refuse(words[0], pointer, "remove it, or add the type it applies to",
                             f" (it does not apply to type {json.dumps(declared)})")

    def _values(self, node: dict[str, Any], pointer: str) -> None:
        if "enum" in node and (not isinstance(node["enum"], list) or not node["enum"]):
            raise _bad("enum", pointer, "a non-empty list")
        keyword = "const" if "const" in node else "enum" if "enum" in node else None
        if keyword is None:
            return
        found = [node["const"]] if keyword == "const" else node["enum"]
        try:
            json.dumps(found, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise _bad(keyword, pointer, f"JSON values ({exc})") from exc
        types = declared_types(node)
        if types is not None and not any(has_type(v, t) for v in found for t in types):
            raise _unsatisfiable(keyword, pointer, f"no value has type {json.dumps(node['type'])}")

    def _unions(self, node: dict[str, Any], pointer: str) -> None:
        for keyword in ("anyOf", "oneOf"):
            if keyword not in node:
                continue
            if keyword == "oneOf" and "anyOf" in node:
                raise refuse("oneOf", pointer, "nest one inside the other", " beside 'anyOf'")
            branches = node[keyword]
            if not isinstance(branches, list) or not branches:
                raise _bad(keyword, pointer, "a non-empty list of schemas")
            for i, branch in enumerate(branches):
                self.schema(branch, join(pointer, keyword, i))
                self.heads.setdefault(pointer, []).append(join(pointer, keyword, i))
            pair = overlapping_pair(branches, self.resolve) if keyword == "oneOf" else None
            if pair is not None:
                raise refuse("oneOf", pointer, "make the branches exclusive (different types, different const "
                             "values, or a required property with different const values), or use anyOf",
                             f": branches {pair[0]} and {pair[1]} may both match")

    def _ref(self, ref: Any, pointer: str) -> None:
        if not isinstance(ref, str):
            raise _bad("$ref", pointer, "a string")
        target_pointer, target = resolve_ref(self.root, ref, pointer)
        self.refs.append(pointer)
        self.heads.setdefault(pointer, []).append(target_pointer)
        self.schema(target, target_pointer)

    def _string(self, node: dict[str, Any], pointer: str) -> None:
        low, high = _count(node, "minLength", pointer), _count(node, "maxLength", pointer)
        if low is not None and high is not None and low > high:
            raise _unsatisfiable("minLength", pointer, f"it is above maxLength ({low} > {high})")
        if "format" in node:
            if not isinstance(node["format"], str):
                raise _bad("format", pointer, "a string")
            if node["format"] not in FORMATS:
                raise UsageError(f"unsupported JSON schema format '{node['format']}' at {where(pointer)}",
                                 f"supported formats: {', '.join(sorted(FORMATS))}; or use 'pattern'")
        if "pattern" in node:
            if not isinstance(node["pattern"], str):
                raise _bad("pattern", pointer, "a string")
            try:
                pattern_gbnf(node["pattern"])
            except PatternError as exc:
                raise refuse("pattern", pointer, "simplify the pattern", f": {exc}") from exc
        for lead, others in (("pattern", ("format", "minLength", "maxLength")), ("format", ("minLength", "maxLength"))):
            clash = [k for k in others if k in node]
            if lead in node and clash:
                raise refuse(clash[0], pointer, "write the length into a pattern, e.g. ^[a-z]{0,8}$",
                             f" together with '{lead}'")

    def _number(self, node: dict[str, Any], pointer: str, numeric: str) -> None:
        for keyword in FAMILY_KEYWORDS["number"]:
            if keyword in node and not is_number(node[keyword]):
                raise _bad(keyword, pointer, "a finite number (a boolean exclusiveMinimum/Maximum is draft 4)")
            if numeric == "number" and keyword in node and abs(node[keyword]) > NUMBER_BOUND_LIMIT:
                raise refuse(keyword, pointer, "use type integer for bounds this large",
                             " (beyond 2**53 for type number)")
        for keyword in FAMILY_KEYWORDS["number"]:
            if keyword in node and bound_digits({keyword: node[keyword]}, numeric == "integer") > MAX_BOUND_DIGITS:
                raise refuse(keyword, pointer, "use a bound with fewer digits",
                             f": bounds longer than {MAX_BOUND_DIGITS} digits are not enforced")
        if bounds_empty(node, integer=numeric == "integer"):
            raise _unsatisfiable("minimum" if "minimum" in node else "exclusiveMinimum", pointer,
                                 f"no {numeric} lies within the bounds")

    def _array(self, node: dict[str, Any], pointer: str) -> None:
        low, high = _count(node, "minItems", pointer), _count(node, "maxItems", pointer)
        if low is not None and high is not None and low > high:
            raise _unsatisfiable("minItems", pointer, f"it is above maxItems ({low} > {high})")
        items = node.get("items")
        if isinstance(items, list):
            raise refuse("items", pointer, "use 'prefixItems' for tuples", " as a list (draft 4 tuples)")
        prefix = node.get("prefixItems", [])
        if not isinstance(prefix, list) or ("prefixItems" in node and not prefix):
            raise _bad("prefixItems", pointer, "a non-empty list of schemas")
        for i, sub in enumerate(prefix):
            self.schema(sub, join(pointer, "prefixItems", i))
        if "items" in node:
            self.schema(items, join(pointer, "items"), allow_false=True)
        if items is False and (low or 0) > len(prefix):
            raise _unsatisfiable("minItems", pointer, "'items' is false")

    def _object(self, node: dict[str, Any], pointer: str) -> None:
        properties = node.get("properties", {})
        if not isinstance(properties, dict):
            raise _bad("properties", pointer, "an object of schemas")
        required = node.get("required", [])
        if not isinstance(required, list) or any(not isinstance(r, str) for r in required) \
                or len(set(required)) < len(required):
            raise _bad("required", pointer, "a list of property names (each once)")
        for name in required:
            if name not in properties:
                raise refuse("required", pointer, "add the property to 'properties' with its schema",
                             f": '{name}' is not in 'properties'")
        for name, sub in properties.items():
            self.schema(sub, join(pointer, "properties", name))
        if "additionalProperties" in node:
            self.schema(node["additionalProperties"], join(pointer, "additionalProperties"), allow_false=True)

    def finish(self) -> None:
        if self.refs and self.nested_ids:
            raise refuse("$id", self.nested_ids[0], "remove the nested '$id'", " (with '$ref', only the top-level $id)")
        state: dict[str, int] = {}  # 1: on the path, 2: done

        def visit(pointer: str) -> None:
            state[pointer] = 1
            for nxt in self.heads.get(pointer, ()):
                if state.get(nxt) == 1:
                    raise refuse("$ref", pointer, "recursion must go through an object property or an array item",
                                 f": it loops back to {where(nxt)} before any text")
                if nxt not in state:
                    visit(nxt)
            state[pointer] = 2

        for start in list(self.heads):
            if start not in state:
                visit(start)


def check_json_format(json_format: Any) -> None:
    """Refuse a ``json_format`` that is not None, "json", or a JSON schema in the supported subset."""
    if json_format is None or json_format == "json":
        return
    if not isinstance(json_format, dict):
        raise UsageError('format must be "json" or a JSON schema object',
                         "pass a JSON object schema, e.g. {\"type\": \"object\", \"properties\": {...}}")
    checker = _Checker(json_format)
    try:
        checker.schema(json_format, "")
        checker.finish()
    except RecursionError:
        raise UsageError("the JSON schema is nested too deeply", "flatten it, or use $defs and $ref") from None
