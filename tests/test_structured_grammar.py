"""The schema grammar, checked by llama.cpp's own grammar engine.

``accepts(grammar, text)`` feeds ``text`` byte by byte (the tiny model's byte tokens) to llama.cpp's
grammar sampler and then asks whether end-of-sequence is allowed: the exact set of texts the
sampler lets a model produce. Properties: digit ranges match arithmetic, number bounds survive the
float round trip, patterns only admit matching strings; then one test per gap found in
llama-cpp-python's converter (the stock converter lets an invalid document through, ours does not).
"""

from __future__ import annotations

import ctypes
import json
import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from slmctl.backends.gguf import LlamaCppBackend
from slmctl.errors import UsageError
from slmctl.options import LoadOptions
from slmctl.structured.bounds import number_bounds
from slmctl.structured.gbnf import grammar_for
from slmctl.structured.ranges import decimal_range, integer_range

Accepts = Callable[[str, str], bool]


def examples(n: int) -> settings:
    """Deterministic runs (CI): derandomized, no example database, no deadline."""
    return settings(deadline=None, derandomize=True, database=None, max_examples=n,
                    suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def accepts(tiny_gguf: Path) -> Iterator[Accepts]:
    import llama_cpp

    model = LlamaCppBackend().load(tiny_gguf, LoadOptions(num_ctx=64, num_thread=1))
    vocab = model._llm._model.vocab
    byte_token = {}
    for token in range(llama_cpp.llama_vocab_n_tokens(vocab)):
        text = llama_cpp.llama_vocab_get_text(vocab, token).decode()
        if re.fullmatch(r"<0x[0-9A-F]{2}>", text):
            byte_token[int(text[3:5], 16)] = token
    eos = llama_cpp.llama_vocab_eos(vocab)

    def check(grammar: str, text: str) -> bool:
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
        assert sampler, f"llama.cpp could not parse the grammar:\n{grammar}"
        data = (llama_cpp.llama_token_data * 1)()
        candidates = llama_cpp.llama_token_data_array(data=data, size=1, selected=-1, sorted=False)
        try:
            for token in [byte_token[b] for b in text.encode()] + [eos]:
                data[0].id, data[0].logit, candidates.size = token, 0.0, 1
                llama_cpp.llama_sampler_apply(sampler, ctypes.byref(candidates))
                if data[0].logit == float("-inf"):
                    return False
                if token != eos:
                    llama_cpp.llama_sampler_accept(sampler, token)
            return True
        finally:
            llama_cpp.llama_sampler_free(sampler)

    yield check
    model.close()


def is_valid(text: str, schema: dict[str, Any]) -> bool:
    """Whether ``text`` is a JSON document valid against ``schema`` (formats checked)."""
    try:
        jsonschema.validate(json.loads(text), schema, format_checker=jsonschema.FormatChecker())
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


# -- digit ranges --------------------------------------------------------------------------------
bound = st.one_of(st.none(), st.integers(-10**6, 10**6), st.integers(-99, 99))


@examples(400)
@given(low=bound, high=bound, values=st.lists(st.integers(-2 * 10**6, 2 * 10**6) | st.integers(-120, 120),
                                             min_size=10, max_size=30))
def test_integer_range_regex_is_exactly_the_range(low: int | None, high: int | None, values: list[int]) -> None:
    expr = integer_range(low, high, max_digits=7)
    if low is not None and high is not None and low > high:
        assert expr is None
        return
    pattern = re.compile(expr.regex())
    for edge in (low, high):
        if edge is not None:
            values += [edge - 1, edge, edge + 1]
    for n in values:
        inside = (low is None or n >= low) and (high is None or n <= high) and abs(n) < 10**7
        assert bool(pattern.fullmatch(str(n))) == inside, (low, high, n)
    assert not any(pattern.fullmatch(t) for t in ("-0", "00", "01", "-01", "+1", "", "1.0"))


@examples(40)
@given(low=bound, high=bound, values=st.lists(st.integers(-2 * 10**6, 2 * 10**6) | st.integers(-120, 120),
                                             min_size=5, max_size=10))
def test_integer_bounds_in_llama_cpp(accepts: Accepts, low: int | None, high: int | None, values: list[int]) -> None:
    assume(low is None or high is None or low <= high)
    schema = {"type": "integer", **({"minimum": low} if low is not None else {}),
              **({"maximum": high} if high is not None else {})}
    grammar = grammar_for(schema)
    for edge in (low, high):
        if edge is not None:
            values += [edge - 1, edge, edge + 1]
    for n in values:
        inside = (low is None or n >= low) and (high is None or n <= high)
        assert accepts(grammar, str(n)) == inside, (schema, n)
    assert not accepts(grammar, "1e2") and not accepts(grammar, "01")


decimals = st.decimals(min_value=-10**4, max_value=10**4, places=3, allow_nan=False, allow_infinity=False)


@examples(300)
@given(low=st.none() | decimals, high=st.none() | decimals, texts=st.lists(decimals.map(str), min_size=10, max_size=30))
def test_decimal_range_regex_is_exactly_the_range(low: Decimal | None, high: Decimal | None, texts: list[str]) -> None:
    expr = decimal_range(low, high, max_digits=6)
    if expr is None:
        assert low is not None and high is not None and low > high
        return
    pattern = re.compile(expr.regex())
    for edge in (low, high):
        if edge is not None:
            texts += [str(edge), f"{edge:f}0", str(edge + Decimal("0.0001")), str(edge - Decimal("0.0001"))]
    for text in texts:
        value = Decimal(text)
        if "E" in text or abs(value) >= 10**6:
            continue
        assert bool(pattern.fullmatch(text)) == ((low is None or value >= low) and (high is None or value <= high)), \
            (low, high, text)


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False) | st.integers(-1000, 1000)


@examples(200)
@given(keys=st.sets(st.sampled_from(["minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"]), min_size=1),
       values=st.lists(finite, min_size=4, max_size=4), steps=st.lists(st.integers(0, 10**6), min_size=8, max_size=8))
def test_number_bounds_survive_the_float_round_trip(keys: set[str], values: list[float], steps: list[int]) -> None:
    schema: dict[str, Any] = {"type": "number", **dict(zip(sorted(keys), values))}
    validator = jsonschema.Draft202012Validator(schema)
    low, high = number_bounds(schema)
    assume(low is None or high is None or low <= high)
    pattern = re.compile(decimal_range(low, high).regex())
    start = low if low is not None else (high - 100 if high is not None else Decimal(0))
    span = (high - start) if high is not None else Decimal(1000)
    for step in steps:  # decimals across the allowed span, and the edges with extra digits
        for text in (f"{start + span * step / 10**6:f}", f"{start:f}", f"{(high or start):f}"):
            if pattern.fullmatch(text):
                assert validator.is_valid(json.loads(text)), (schema, text)


# -- patterns ------------------------------------------------------------------------------------
_ATOMS = ["a", "b", "x", "-", "\\.", "\\d", "\\w", "[a-c]", "[^a]", "[0-9x]", '"', "\\\\", ".", "[^\\d]", "\\s"]


@st.composite
def regexes(draw: st.DrawFn, depth: int = 2) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["atom", "atom", "group", "alt"] if depth else ["atom"]))
        if kind == "atom":
            part = draw(st.sampled_from(_ATOMS))
        elif kind == "group":
            part = f"({draw(regexes(depth - 1))})"
        else:
            part = f"({draw(regexes(depth - 1))}|{draw(regexes(depth - 1))})"
        part += draw(st.sampled_from(["", "", "?", "*", "+", "{2}", "{1,3}", "{0,2}?"]))
        parts.append(part)
    return "".join(parts)


@examples(150)
@given(body=regexes(), anchors=st.sampled_from(["^$", "^", "$", ""]), data=st.data())
def test_pattern_grammar_admits_only_matching_strings(accepts: Accepts, body: str, anchors: str,
                                                      data: st.DataObject) -> None:
    pattern = ("^" if "^" in anchors else "") + body + ("$" if "$" in anchors else "")
    try:
        re.compile(pattern)
        grammar = grammar_for({"type": "string", "pattern": pattern})
    except (re.error, UsageError):  # not a regex, or refused (the schema tests cover refusals)
        return
    printable = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
    matching = data.draw(st.lists(st.from_regex(pattern, fullmatch=True, alphabet=printable), max_size=6))
    others = data.draw(st.lists(st.text(st.sampled_from('ab-x.0"\\ \n\té'), max_size=6), max_size=6))
    for value in matching + others + [v + c for v in matching for c in "a\"\n"]:
        text = json.dumps(value)
        if accepts(grammar, text):  # sound: whatever the grammar lets through matches
            assert re.search(pattern, json.loads(text)), (pattern, text)
    for value in matching:  # and complete on printable ASCII but the quote and the backslash
        assert accepts(grammar, json.dumps(value)) or set(value) & set('"\\'), (pattern, value)


# -- the gaps of llama-cpp-python's converter ------------------------------------------------------
def stock_accepts(accepts: Accepts, schema: dict[str, Any], text: str) -> bool:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        return accepts(json_schema_to_gbnf(json.dumps(schema)), text)
    except (AssertionError, KeyError, ValueError):
        return True  # it cannot even convert the schema: no guarantee at all


INTEGER = {"type": "integer"}
GAPS = [  # (what, schema, an invalid document the stock converter's grammar lets through)
    ("integer minimum", {"type": "integer", "minimum": 5}, "3"),
    ("integer exclusiveMaximum", {"type": "integer", "exclusiveMaximum": 0}, "0"),
    ("number maximum", {"type": "number", "maximum": 1.5}, "1.6"),
    ("backslash in enum", {"enum": ["a\\b"]}, '"a\\b"'),
    ("newline in const", {"const": "a\nb"}, '"a\nb"'),
    ("raw control character in a string", {"type": "string"}, '"a\u0001"'),
    ("surrogate pair counted as 2 for minLength", {"type": "string", "minLength": 2}, '"\\ud83d\\ude00"'),
    ("minItems without items", {"type": "array", "minItems": 2}, "[1]"),
    ("maxItems without items", {"type": "array", "maxItems": 1}, "[1,2]"),
    ("type list drops maxLength", {"type": ["string", "null"], "maxLength": 1}, '"abc"'),
    ("additional key repeats a declared one",
     {"type": "object", "properties": {"a": INTEGER}, "additionalProperties": {"type": "string"}}, '{"a":"x"}'),
    ("additional key escapes a declared one",
     {"type": "object", "properties": {"a": INTEGER}, "additionalProperties": True}, '{"\\u0061":{}}'),
    ("property named *", {"type": "object", "properties": {"*": INTEGER}, "required": ["*"],
                          "additionalProperties": True}, '{"b":{}}'),
    ("$ref named like a property",
     {"type": "object", "required": ["q"], "$defs": {"p": INTEGER},
      "properties": {"p": {"type": "string", "maxLength": 3}, "q": {"$ref": "#/$defs/p"}}}, '{"q":"x"}'),
    ("prefixItems beside items", {"type": "array", "prefixItems": [INTEGER], "items": {"type": "string"}}, '["a"]'),
    ("calendar date", {"type": "string", "format": "date"}, '"2023-02-29"'),
    ("pattern dot takes a quote", {"type": "string", "pattern": "^.{3}$"}, '"a"b"'),
]


@pytest.mark.parametrize(("what", "schema", "invalid"), GAPS, ids=[g[0] for g in GAPS])
def test_stock_gap_is_closed(accepts: Accepts, what: str, schema: dict[str, Any], invalid: str) -> None:
    assert not is_valid(invalid, schema)
    assert stock_accepts(accepts, schema, invalid), "the stock converter closed this gap"
    assert not accepts(grammar_for(schema), invalid)


#: What Pydantic v2 writes for a model with a discriminated union and an optional field.
PYDANTIC = {
    "$defs": {
        "Cat": {"properties": {"pet_type": {"const": "cat", "title": "Pet Type", "type": "string"},
                               "meows": {"title": "Meows", "type": "integer"}},
                "required": ["pet_type", "meows"], "title": "Cat", "type": "object"},
        "Dog": {"properties": {"pet_type": {"const": "dog", "title": "Pet Type", "type": "string"},
                               "barks": {"title": "Barks", "type": "number"}},
                "required": ["pet_type", "barks"], "title": "Dog", "type": "object"},
    },
    "properties": {
        "pet": {"discriminator": {"mapping": {"cat": "#/$defs/Cat", "dog": "#/$defs/Dog"}, "propertyName": "pet_type"},
                "oneOf": [{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Dog"}], "title": "Pet"},
        "n": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None, "title": "N"},
    },
    "required": ["pet"], "title": "Model", "type": "object",
}


@pytest.mark.parametrize(("schema", "valid", "invalid"), [
    ({"enum": ["a\\b", 'q"', "é\n", 1.5, None, [1, {"k": True}]]},
     ['"a\\\\b"', '"q\\""', '"\\u00e9\\n"', "1.5", "null", '[1, {"k": true}]'], ['"a\\b"', '"é\n"']),
    ({"type": "string", "maxLength": 2}, ['""', '"\\n\\u00e9"', '"é😀"'], ['"abc"', '"\\ud83d\\ude00"', '"\t"']),
    ({"type": "string", "format": "date-time"}, ['"2024-02-29T23:59:59.123+05:30"', '"2023-12-31T00:00:00Z"'],
     ['"2023-02-29T00:00:00Z"', '"2023-01-01T24:00:00Z"']),
    ({"type": "string", "format": "uuid"}, ['"123e4567-e89b-12d3-a456-426614174000"'], ['"123e4567"']),
    ({"type": "array", "prefixItems": [INTEGER, {"type": "string"}], "items": False, "minItems": 1},
     ["[1]", '[1,"a"]'], ["[]", '[1,"a",2]', '["a"]']),
    ({"type": "array", "prefixItems": [INTEGER], "items": {"type": "boolean"}, "minItems": 3, "maxItems": 4},
     ["[1,true,false]", "[1,true,false,true]"], ["[1,true]", "[1,true,true,true,true]"]),
    ({"type": "object", "properties": {"": INTEGER, "root": INTEGER, "space": {"type": "string", "maxLength": 1}},
      "required": ["", "root", "space"]}, ['{"":1,"root":2,"space":"x"}'], ["{}", '{"":1}']),
    ({"type": "object", "properties": {"a": INTEGER}, "additionalProperties": {"type": "string"}},
     ['{"a":1,"ab":"x","b":"y"}', '{"":"x"}'], ['{"a":1,"a":2}', '{"b":1}']),
    ({"$defs": {"n": {"type": "object", "properties": {"k": {"type": "array", "items": {"$ref": "#/$defs/n"}}},
                      "additionalProperties": False}}, "$ref": "#/$defs/n"}, ['{"k":[{"k":[{}]},{}]}'], ['{"k":[1]}']),
    ({"description": "anything"}, ["1", '"x"', "[]", "null", '{"a":[true]}'], ["", "nul"]),
    ({"type": "object", "properties": {"next": {"$ref": "#"}}, "additionalProperties": False},
     ["{}", '{"next":{"next":{}}}'], ['{"next":1}', '{"other":{}}']),
    (PYDANTIC, ['{"pet":{"pet_type":"cat","meows":3}}', '{"pet":{"pet_type":"dog","barks":1.5},"n":null}'],
     ['{"pet":{"pet_type":"cat","barks":1}}', '{"pet":{"pet_type":"dog","barks":1},"n":"x"}']),
    ({"oneOf": [{"type": "integer", "maximum": 3}, {"type": "string", "maxLength": 1}]}, ["3", '"x"'], ["4", '"xy"']),
    ({"type": "number", "exclusiveMinimum": -1, "exclusiveMaximum": 1}, ["0", "-0.5", "0.999"], ["1", "-1", "1.0"]),
    ({"type": "string", "pattern": "^\\d[^a]\\w\\s\\.$"}, ['"5b_ ."'], ['"5a_ ."', '"x1_ ."', '"5b_\\t."']),
], ids=lambda v: str(v)[:30])
def test_documents(accepts: Accepts, schema: dict[str, Any], valid: list[str], invalid: list[str]) -> None:
    grammar = grammar_for(schema)
    for text in valid:
        assert is_valid(text, schema) and accepts(grammar, text), text
    for text in invalid:
        assert not accepts(grammar, text), text


def test_json_mode_is_llama_cpp_json_grammar() -> None:
    from llama_cpp.llama_grammar import JSON_GBNF

    assert grammar_for("json") == JSON_GBNF
