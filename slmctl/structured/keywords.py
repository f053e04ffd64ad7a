"""The vocabulary of the supported JSON-schema subset: which keywords exist for slmctl, and how a
schema's type is read.

:data:`SUPPORTED` keywords are enforced by the grammar, :data:`ANNOTATIONS` (and ``x-`` extensions)
are accepted and change nothing, :data:`REFUSED` ones are refused with a hint; any other keyword is
unknown, and refused too.
"""

from __future__ import annotations

from typing import Any

from slmctl.structured.oneof import json_type

#: Keywords with no effect on validation (``discriminator``: OpenAPI's, emitted by Pydantic; ``oneOf``
#: still has to prove its branches exclusive on its own).
ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$schema", "$id", "$comment",
                         "deprecated", "readOnly", "writeOnly", "discriminator"})
TYPES = ("null", "boolean", "integer", "number", "string", "array", "object")
#: Keywords that constrain one kind of value (``number`` covers ``integer``).
FAMILY_KEYWORDS: dict[str, tuple[str, ...]] = {
    "string": ("minLength", "maxLength", "pattern", "format"),
    "number": ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"),
    "array": ("items", "prefixItems", "minItems", "maxItems"),
    "object": ("properties", "required", "additionalProperties"),
}
GENERAL_KEYWORDS = ("type", "enum", "const", "anyOf", "oneOf", "$ref", "$defs", "definitions")
SUPPORTED = frozenset(GENERAL_KEYWORDS).union(*FAMILY_KEYWORDS.values())
#: The largest minLength/maxLength/minItems/maxItems enforced (the grammar spells each count out).
MAX_COUNT = 1000
_CHECK_LATER = "drop it and check that part of the answer yourself"
#: Keywords refused on purpose, with what to do instead.
REFUSED: dict[str, str] = {
    "allOf": "merge the subschemas into one schema",
    "not": _CHECK_LATER, "if": _CHECK_LATER, "then": _CHECK_LATER, "else": _CHECK_LATER,
    "multipleOf": _CHECK_LATER, "uniqueItems": _CHECK_LATER, "contains": _CHECK_LATER,
    "minContains": _CHECK_LATER, "maxContains": _CHECK_LATER,
    "minProperties": "list the properties and mark them 'required'",
    "maxProperties": "list the properties and set 'additionalProperties': false",
    "patternProperties": "list the properties by name", "propertyNames": "list the properties by name",
    "dependentRequired": _CHECK_LATER, "dependentSchemas": _CHECK_LATER, "dependencies": _CHECK_LATER,
    "unevaluatedProperties": "use 'additionalProperties'", "unevaluatedItems": "use 'items'",
    "additionalItems": "use 'prefixItems' and 'items'",
    "$anchor": "use '$ref' with a JSON pointer such as #/$defs/name", "$dynamicRef": "use '$ref'",
    "$dynamicAnchor": "use '$ref'", "$recursiveRef": "use '$ref'", "$recursiveAnchor": "use '$ref'",
    "$vocabulary": "remove it",
}


def declared_types(schema: dict[str, Any]) -> list[str] | None:
    """The schema's ``type`` as a list, or the one kind its keywords imply, or None (any value)."""
    declared = schema.get("type")
    if declared is not None:
        return list(declared) if isinstance(declared, list) else [declared]
    families = [f for f, words in FAMILY_KEYWORDS.items() if any(w in schema for w in words)]
    return families if len(families) == 1 else None


def has_type(value: Any, name: str) -> bool:
    """JSON-schema type test (1.0 is an integer, True is not a number)."""
    kind = json_type(value)
    if name == "integer":
        return kind == "number" and (isinstance(value, int) or value.is_integer())
    return kind == name
