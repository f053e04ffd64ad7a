"""Reading tool calls out of model answers, forcing them by schema, and holding them back in streams."""

from __future__ import annotations

import json

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slmctl.errors import UsageError
from slmctl.toolcalls import ToolCallFilter, forced_call_schema, parse_tool_calls

OFFERED = ["get_weather", "get_time"]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
    {"type": "function", "function": {"name": "get_time"}}]


@pytest.mark.parametrize("text", [
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
    '<|tool_call|>[{"name": "get_weather", "arguments": {"city": "Paris"}}]<|/tool_call|>',
    '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}]',
    '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}',
    '{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}',
    '  [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]',
])
def test_each_known_format_is_read(text: str) -> None:
    content, calls = parse_tool_calls(text, OFFERED)
    assert content == "" and [(c.name, c.arguments) for c in calls] == [("get_weather", {"city": "Paris"})]
    assert calls[0].id.startswith("call_") and json.loads(calls[0].arguments_json) == {"city": "Paris"}


def test_text_before_a_call_stays_content_and_several_calls_are_read() -> None:
    text = ('Let me check.\n<tool_call>{"name": "get_time", "arguments": {}}</tool_call>\n'
            '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>')
    content, calls = parse_tool_calls(text, OFFERED)
    assert content == "Let me check." and [c.name for c in calls] == ["get_time", "get_weather"]
    assert len({c.id for c in calls}) == 2


@pytest.mark.parametrize("text", [
    "plain words", '{"answer": 42}', '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>',
    '<tool_call>{"name": "get_time", "arguments": </tool_call>', '[1, 2, 3]',
    '{"name": "get_time", "arguments": {}} and then some words',
])
def test_what_is_not_a_call_to_an_offered_function_stays_text(text: str) -> None:
    assert parse_tool_calls(text, OFFERED) == (text, [])


def test_forced_schema_names_one_function_or_any_and_validates_calls() -> None:
    named = forced_call_schema(TOOLS, "get_weather")
    jsonschema.validate({"name": "get_weather", "arguments": {"city": "x"}}, named)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "get_time", "arguments": {}}, named)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "get_weather", "arguments": {}}, named)  # city is required
    anyone = forced_call_schema(TOOLS, None)
    for call in ({"name": "get_weather", "arguments": {"city": "x"}}, {"name": "get_time", "arguments": {}}):
        jsonschema.validate(call, anyone)
    with pytest.raises(UsageError, match="nosuch"):
        forced_call_schema(TOOLS, "nosuch")
    with pytest.raises(UsageError, match="no tools"):
        forced_call_schema([], None)


def test_forced_schema_keeps_the_references_of_each_tool() -> None:
    """Pydantic-style parameters put their sub-schemas in $defs; nested under a call they must still resolve."""
    def tool(name: str, inner: str) -> dict:
        return {"type": "function", "function": {"name": name, "parameters": {
            "type": "object", "properties": {"item": {"$ref": "#/$defs/Item"}}, "required": ["item"],
            "$defs": {"Item": {"type": "object", "properties": {inner: {"type": "string"}}, "required": [inner]}}}}}

    schema = forced_call_schema([tool("a", "x"), tool("b", "y")], None)
    assert set(schema["$defs"]) == {"a.Item", "b.Item"}
    jsonschema.validate({"name": "a", "arguments": {"item": {"x": "1"}}}, schema)
    jsonschema.validate({"name": "b", "arguments": {"item": {"y": "1"}}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "a", "arguments": {"item": {"y": "1"}}}, schema)
    from slmctl.structured.schema import check_json_format

    check_json_format(schema)  # a schema slmctl can enforce


def feed_all(text: str, cuts: list[int]) -> tuple[str, str, list[str]]:
    split = ToolCallFilter(OFFERED)
    shown, start = [], 0
    for cut in sorted(set(cuts)) + [len(text)]:
        shown.append(split.feed(text[start:cut]))
        start = cut
    rest, calls = split.finish()
    return "".join(shown), rest, [c.name for c in calls]


PLAIN = st.text(st.characters(blacklist_characters="<[{"), max_size=40)


@settings(max_examples=200, deadline=None)
@given(prefix=PLAIN, cuts=st.lists(st.integers(0, 200), max_size=8))
def test_filter_shows_plain_text_and_holds_calls_whatever_the_pieces(prefix: str, cuts: list[int]) -> None:
    call = '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>'
    shown, rest, names = feed_all(prefix + call, cuts)
    assert shown == prefix and rest.strip() == "" and names == ["get_time"]
    shown, rest, names = feed_all(prefix, cuts)
    assert shown + rest == prefix and names == []


@settings(max_examples=100, deadline=None)
@given(cuts=st.lists(st.integers(0, 80), max_size=6))
def test_filter_gives_back_json_that_is_not_a_call(cuts: list[int]) -> None:
    text = '{"answer": [1, 2, 3], "ok": true}'
    shown, rest, names = feed_all(text, cuts)
    assert shown == "" and rest == text and names == []
    shown, rest, names = feed_all("<tool_ca and more", cuts)
    assert shown + rest == "<tool_ca and more" and names == []
