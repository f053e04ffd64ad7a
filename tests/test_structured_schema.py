"""The supported JSON-schema subset: what check_json_format accepts, and what it refuses by name and place."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slmctl.backends.base import GenerateRequest
from slmctl.errors import ExitCode, UsageError
from slmctl.structured.keywords import REFUSED
from slmctl.structured.schema import check_json_format

PERSON = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Person", "description": "someone", "$comment": "annotations are accepted",
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 20, "default": "x", "examples": ["a"]},
        "age": {"type": "integer", "minimum": 0, "exclusiveMaximum": 150, "deprecated": False},
        "score": {"type": "number", "minimum": -1.5, "maximum": 1e3, "readOnly": True},
        "kind": {"enum": ["a", "b", 3, None]},
        "tag": {"type": "string", "const": "x", "writeOnly": True},
        "born": {"type": "string", "format": "date"},
        "code": {"type": "string", "pattern": r"^[A-Z]{2}-\d{3}$"},
        "nick": {"type": ["string", "null"], "maxLength": 5},
        "pets": {"type": "array", "items": {"$ref": "#/$defs/pet"}, "minItems": 0, "maxItems": 3},
        "pair": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "items": False},
        "extra": {"type": "object", "additionalProperties": {"type": "boolean"}},
        "either": {"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 2}], "title": "t"},
        "one": {"oneOf": [{"type": "integer"}, {"type": "string"}, {"const": None}]},
        "tree": {"$ref": "#/definitions/node"},
        "x-vendor": {"type": "boolean"},
        "anything": {},
        "truthy": True,
    },
    "required": ["name", "age"],
    "additionalProperties": False,
    "x-extension": {"ignored": "yes"},
    "$defs": {"pet": {"type": "object", "properties": {"kind": {"const": "cat"}}, "required": ["kind"]}},
    "definitions": {"node": {"type": "object",
                             "properties": {"kids": {"type": "array", "items": {"$ref": "#/definitions/node"}}}}},
}


@pytest.mark.parametrize("schema", [
    None, "json", {}, {"type": "object"}, PERSON,
    {"type": "integer", "minimum": 1.5, "maximum": 2.5},
    {"maxLength": 3},  # typeless: the keywords imply a string
    {"oneOf": [{"type": "object", "properties": {"k": {"const": 1}}, "required": ["k"]},
               {"type": "object", "properties": {"k": {"const": 2}, "v": {"type": "string"}}, "required": ["k"]}]},
    {"oneOf": [{"enum": [1, 2]}, {"enum": [3, "1"]}]},
    {"oneOf": [{"type": "integer", "const": 1}, {"type": "integer", "enum": [2, 3.5]}, {"type": "string"}]},
    {"$ref": "#/$defs/a~1b", "$defs": {"a/b": {"type": "null"}}},
    {"type": "object", "properties": {"next": {"$ref": "#"}}},
], ids=lambda s: str(s)[:40])
def test_accepted(schema: Any) -> None:
    check_json_format(schema)
    GenerateRequest(prompt="x", json_format=schema)  # the request checks it the same way


def refused(schema: Any) -> UsageError:
    with pytest.raises(UsageError) as info:
        check_json_format(schema)
    assert info.value.exit_code == ExitCode.USAGE and info.value.http_status == 400
    return info.value


@pytest.mark.parametrize("keyword", sorted(REFUSED))
def test_refused_keyword_is_named_with_its_place(keyword: str) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", keyword: 2}}}
    error = refused(schema)
    assert f"'{keyword}' at /properties/n" in error.message
    assert error.hint


@pytest.mark.parametrize(("schema", "words"), [
    ({"type": "object", "properties": {"n": {"type": "integer", "multipleOf": 2}}},
     "unsupported JSON schema keyword 'multipleOf' at /properties/n"),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a", "b"]},
     "'required' at /: 'b' is not in 'properties'"),
    ({"allOf": [{"type": "object"}]}, "'allOf' at /"),
    ({"type": "array", "items": [{"type": "string"}]}, "'items' at / as a list"),
    ({"oneOf": [{"type": "integer"}, {"type": "number"}]}, "'oneOf' at /: branches 0 and 1 may both match"),
    ({"oneOf": [{"type": "string"}, {"maxLength": 3}]}, "'oneOf' at /: branches 0 and 1"),
    ({"oneOf": [{"type": "object", "properties": {"k": {"const": 1}}, "required": ["k"]},
                {"properties": {"k": {"const": 2}}, "required": ["k"]}]}, "branches 0 and 1"),
    ({"$ref": "#/$defs/a", "type": "object", "$defs": {"a": {}}}, "'type' at / beside '$ref'"),
    ({"anyOf": [{"type": "string"}], "maxLength": 3}, "'maxLength' at / beside 'anyOf'"),
    ({"enum": ["a"], "maxLength": 3}, "'maxLength' at / beside 'enum'"),
    ({"type": "string", "const": 1}, "'const' at / leaves no valid value"),
    ({"$ref": "https://example.com/s.json"}, "'$ref' at /: 'https://example.com/s.json' points outside"),
    ({"$ref": "#/$defs/missing"}, "'$ref' at / points to nothing"),
    ({"$ref": "#node"}, "'$ref' at /: '#node' is an anchor"),
    ({"type": "string", "format": "email"}, "unsupported JSON schema format 'email' at /"),
    ({"type": "string", "pattern": "a(?=b)"}, "'pattern' at /: the regex construct"),
    ({"type": "string", "pattern": "(?i)abc"}, "'pattern' at /: inline flags"),
    ({"type": "string", "pattern": "^a|b$"}, "'pattern' at /: anchors"),
    ({"type": "string", "pattern": "(a?)*"}, "'pattern' at /: a repeat of something that may be empty"),
    ({"type": "string", "pattern": "[a-z]+", "maxLength": 3}, "'maxLength' at / together with 'pattern'"),
    ({"type": "string", "format": "date", "minLength": 3}, "'minLength' at / together with 'format'"),
    ({"type": "string", "maxLength": "x"}, "'maxLength' at / must be a non-negative integer"),
    ({"type": "string", "maxLength": 2000}, "'maxLength' at /: counts above 1000"),
    ({"type": "string", "minLength": 3, "maxLength": 2}, "'minLength' at / leaves no valid value"),
    ({"type": "integer", "minimum": 5, "exclusiveMaximum": 5}, "leaves no valid value"),
    ({"type": "integer", "exclusiveMinimum": True}, "'exclusiveMinimum' at / must be a finite number"),
    ({"type": "number", "maximum": 2**60}, "'maximum' at / (beyond 2**53"),
    ({"type": "string", "minimum": 3}, "'minimum' at / (it does not apply to type \"string\")"),
    ({"minLength": 1, "minimum": 3}, "keywords for several types"),
    ({"type": "strin"}, "'type' at / must be one of"),
    ({"type": "object", "properties": {"a": {"maxLenght": 3}}},
     "unknown JSON schema keyword 'maxLenght' at /properties/a"),
    ({"type": "object", "properties": {"a": False}}, "schema at /properties/a is false"),
    ({"type": "object", "properties": {"a": 3}}, "schema at /properties/a must be an object or a boolean"),
    ({"type": "object", "properties": {"a~b/c": {"not": {}}}}, "'not' at /properties/a~0b~1c"),
    ({"enum": []}, "'enum' at / must be a non-empty list"),
    ({"const": float("nan")}, "'const' at / must be JSON values"),
    ({"anyOf": [{"$ref": "#"}, {"type": "null"}]}, "loops back"),
    ({"$defs": {"a": {"anyOf": [{"$ref": "#/$defs/a"}, {"type": "string"}]}},
      "oneOf": [{"$ref": "#/$defs/a"}, {"type": "null"}]}, "'oneOf' at /"),
    ({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"anyOf": [{"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"},
     "loops back"),
    ({"$defs": {"a": {"$id": "a.json", "type": "string"}}, "$ref": "#/$defs/a"}, "'$id' at /$defs/a"),
    ({"type": "array", "items": False, "minItems": 1}, "'minItems' at / leaves no valid value"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_refused_with_reason(schema: dict[str, Any], words: str) -> None:
    assert words in refused(schema).message


@pytest.mark.parametrize("value", [True, 3, ["a"], "yaml"])
def test_not_a_schema_object(value: Any) -> None:
    assert "JSON schema object" in refused(value).message


def test_request_refuses_before_generation() -> None:
    with pytest.raises(UsageError, match="'uniqueItems' at /"):
        GenerateRequest(prompt="x", json_format={"type": "array", "uniqueItems": True})


# -- property: an unsupported keyword anywhere is refused and named ---------------------------------
_LEAF = st.sampled_from([
    {"type": "string", "maxLength": 4}, {"type": "integer", "minimum": 0}, {"type": "boolean"},
    {"enum": ["a", "b"]}, {"type": "number"}, {"type": "null"},
])


def _schemas() -> st.SearchStrategy[dict[str, Any]]:
    def extend(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
        objects = st.dictionaries(st.sampled_from(["a", "b", "c", "d/e", "f~g"]), children, min_size=1, max_size=3)
        return st.one_of(
            objects.map(lambda props: {"type": "object", "properties": props}),
            children.map(lambda item: {"type": "array", "items": item, "maxItems": 3}),
            st.lists(children, min_size=1, max_size=3).map(lambda branches: {"anyOf": branches}),
        )
    return st.recursive(_LEAF, extend, max_leaves=6)


def _schema_dicts(schema: Any, pointer: str = "") -> list[tuple[dict[str, Any], str]]:
    """Every (sub)schema with its JSON pointer."""
    found = [(schema, pointer)]
    for keyword in ("properties",):
        for name, sub in schema.get(keyword, {}).items():
            found += _schema_dicts(sub, f"{pointer}/{keyword}/" + name.replace("~", "~0").replace("/", "~1"))
    if "items" in schema:
        found += _schema_dicts(schema["items"], f"{pointer}/items")
    for i, sub in enumerate(schema.get("anyOf", [])):
        found += _schema_dicts(sub, f"{pointer}/anyOf/{i}")
    return found


_BAD_KEYWORDS = sorted(REFUSED) + ["maxLenght", "nullable", "foo"]


@settings(deadline=None, max_examples=150, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(schema=_schemas(), keyword=st.sampled_from(_BAD_KEYWORDS), where=st.integers(0, 100), data=st.data())
def test_unsupported_keyword_anywhere_is_refused_by_name(schema: dict[str, Any], keyword: str, where: int,
                                                         data: st.DataObject) -> None:
    check_json_format(schema)  # the generated subset is supported
    schema = json.loads(json.dumps(schema))  # no shared sub-dicts: only one place gets the keyword
    places = _schema_dicts(schema)
    target, pointer = places[where % len(places)]
    target[keyword] = data.draw(st.sampled_from([1, True, {}, "x", [{"type": "string"}]]))
    error = refused(schema)
    assert f"'{keyword}' at {pointer or '/'}" in error.message, error.message
    assert re.match(r"(unsupported|unknown) JSON schema keyword", error.message)
