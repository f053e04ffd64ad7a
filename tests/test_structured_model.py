"""Answers that finished validate: random schemas of the supported subset on the tiny models.

The tiny GGUF model never samples end-of-sequence on its own, so a generation ends with
``done_reason == "stop"`` only when the grammar is complete and leaves nothing but EOS; every such
answer must parse and validate (formats included). Sampling is wide (temperature 1, no top-k/top-p
cut) so that unlikely tokens (byte tokens, escapes) get their chance. The ONNX model goes through
onnxruntime-genai's guidance with a handful of fixed schemas.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slmctl.backends.base import GenerateRequest, LoadedModel
from slmctl.backends.gguf import LlamaCppBackend
from slmctl.options import LoadOptions, SamplingOptions
from slmctl.structured.schema import check_json_format

# jsonschema checks "time"/"date-time" only with rfc3339-validator (absent), and its global "time" is draft 3's
FORMATS = jsonschema.FormatChecker(formats=("date", "uuid"))
_TIME = r"([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d+)?([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)"


@FORMATS.checks("time")
def _is_time(value: object) -> bool:
    return not isinstance(value, str) or bool(re.fullmatch(_TIME, value, re.ASCII))


@FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    date, _, time = value.partition("T")
    return bool(re.fullmatch(r"\d{4}-\d{2}-\d{2}", date, re.ASCII) and datetime.date.fromisoformat(date)
                and re.fullmatch(_TIME, time, re.ASCII))


def validate(text: str, schema: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(schema, format_checker=FORMATS).validate(json.loads(text))


def answer(model: LoadedModel, schema: dict[str, Any], seed: int, **options: Any) -> tuple[str, str]:
    sampling = SamplingOptions(**{"temperature": 1.0, "top_k": 0, "top_p": 1.0, "num_predict": 256, "seed": seed,
                                  **options})
    generation = model.generate(GenerateRequest(sampling, prompt="Answer in JSON:", json_format=schema))
    text = generation.complete()
    assert generation.stats is not None
    return text, generation.stats.done_reason


# -- schemas of the supported subset -------------------------------------------------------------
scalars = st.one_of(st.text(st.sampled_from('ab "\\\n\té😀'), max_size=3), st.integers(-50, 50),
                    st.floats(-100, 100).map(lambda f: round(f, 2)), st.booleans(), st.none())
NAMES = st.sampled_from(["a", "b", "id", "x y", "é", 'q"k', "*", ""])
PATTERNS = [r"^[A-Z]{2}-\d{1,3}$", r"^(yes|no)$", r"^a.b$", r"^[^a\d]{0,3}$", r'^"?\\?x$', r"^\w\s\d?$", r"^(ab)+$"]


@st.composite
def integers(draw: st.DrawFn) -> dict[str, Any]:
    low = draw(st.none() | st.integers(-1200, 1200))
    high = draw(st.none() | st.integers(0, 2500).map(lambda span: (low or 0) + span))
    schema: dict[str, Any] = {"type": "integer"}
    if low is not None:
        schema.update({"exclusiveMinimum": low - 1} if draw(st.booleans()) else {"minimum": low})
    if high is not None:
        schema.update({"exclusiveMaximum": high + 1} if draw(st.booleans()) else {"maximum": high})
    return schema


@st.composite
def numbers(draw: st.DrawFn) -> dict[str, Any]:
    low = draw(st.none() | st.integers(-10**4, 10**4).map(lambda i: i / 100))
    high = draw(st.none() | st.integers(1, 10**4).map(lambda span: round((low or 0) + span / 100, 2)))
    schema: dict[str, Any] = {"type": "number"}
    if low is not None:
        schema["exclusiveMinimum" if draw(st.booleans()) else "minimum"] = low
    if high is not None:
        schema["exclusiveMaximum" if draw(st.booleans()) else "maximum"] = high
    return schema


LEAVES = st.one_of(
    st.integers(0, 8).map(lambda n: {"type": "string", "maxLength": n}),
    st.tuples(st.integers(0, 3), st.integers(0, 3)).map(lambda t: {"type": "string", "minLength": t[0],
                                                                    "maxLength": t[0] + t[1]}),
    st.lists(scalars, min_size=1, max_size=4).map(lambda values: {"enum": values}),
    scalars.map(lambda value: {"const": value}),
    st.sampled_from([{"type": "boolean"}, {"type": "null"}, {"type": ["string", "null"], "maxLength": 2}]),
    integers(), numbers(),
    st.sampled_from(["date", "time", "date-time", "uuid"]).map(lambda f: {"type": "string", "format": f}),
    st.sampled_from(PATTERNS).map(lambda p: {"type": "string", "pattern": p}),
)
ONE_OF_POOLS = {"integer": integers(), "string": st.integers(0, 4).map(lambda n: {"type": "string", "maxLength": n}),
                "boolean": st.just({"type": "boolean"}), "null": st.just({"const": None})}


@st.composite
def objects(draw: st.DrawFn, children: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    properties = draw(st.dictionaries(NAMES, children, max_size=3))
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    required = draw(st.lists(st.sampled_from(sorted(properties)), unique=True)) if properties else []
    if required:
        schema["required"] = required
    extra = draw(st.sampled_from(["absent", False, {"type": "boolean"}, {"type": "integer", "maximum": 9}]))
    if extra != "absent":
        schema["additionalProperties"] = extra
    return schema


@st.composite
def arrays(draw: st.DrawFn, children: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    most = draw(st.integers(0, 3))
    schema: dict[str, Any] = {"type": "array", "maxItems": most, "minItems": draw(st.integers(0, most))}
    if draw(st.booleans()):
        schema["prefixItems"] = draw(st.lists(children, min_size=1, max_size=2))
        schema["items"] = draw(st.just(False) | children)
        schema["minItems"] = min(schema["minItems"], len(schema["prefixItems"]))
    else:
        schema["items"] = draw(children)
    return schema


@st.composite
def one_of(draw: st.DrawFn) -> dict[str, Any]:
    kinds = draw(st.lists(st.sampled_from(sorted(ONE_OF_POOLS)), min_size=1, max_size=3, unique=True))
    return {"oneOf": [draw(ONE_OF_POOLS[kind]) for kind in kinds]}


def extend(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(objects(children), arrays(children), one_of(),
                     st.lists(children, min_size=1, max_size=3).map(lambda branches: {"anyOf": branches}))


def with_definitions(item: dict[str, Any]) -> dict[str, Any]:
    return {"$defs": {"item": item}, "type": "object", "required": ["p"],
            "properties": {"p": {"$ref": "#/$defs/item"}, "q": {"type": "array", "items": {"$ref": "#/$defs/item"},
                                                              "maxItems": 2}}}


SCHEMAS = st.recursive(LEAVES, extend, max_leaves=5)
SCHEMAS = SCHEMAS | SCHEMAS.map(with_definitions)


# -- GGUF ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gguf(tiny_gguf: Path) -> Iterator[LoadedModel]:
    model = LlamaCppBackend().load(tiny_gguf, LoadOptions(num_ctx=512, num_thread=1))
    yield model
    model.close()


@settings(deadline=None, derandomize=True, database=None, max_examples=200,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(schema=SCHEMAS, seed=st.integers(0, 2**20))
def test_gguf_finished_answers_validate(gguf: LoadedModel, schema: dict[str, Any], seed: int) -> None:
    check_json_format(schema)
    text, reason = answer(gguf, schema, seed)
    if reason == "stop":
        validate(text, schema)


FIXED = [
    {"type": "object", "properties": {"name": {"type": "string", "maxLength": 5},
                                      "age": {"type": "integer", "minimum": -40, "exclusiveMaximum": 130},
                                      "born": {"type": "string", "format": "date"}},
     "required": ["name", "age", "born"], "additionalProperties": False},
    {"type": "array", "items": {"type": "integer", "minimum": 100, "maximum": 199}, "minItems": 1, "maxItems": 3},
    {"type": "integer", "minimum": -7, "maximum": -3},
    {"type": "number", "minimum": -1.25, "maximum": 0.5},
    {"enum": ["a\\b", 'q"', "é\n", 1.5, None]},
    {"type": "string", "pattern": r"^[A-Z]{2}-\d{1,3}$"},
    {"oneOf": [{"type": "integer", "maximum": 3}, {"type": "string", "maxLength": 2}, {"type": "null"}]},
    {"type": "array", "prefixItems": [{"type": "boolean"}, {"enum": ["x", "y"]}], "items": False},
]


@pytest.mark.parametrize("schema", FIXED, ids=lambda s: json.dumps(s)[:40])
def test_gguf_fixed_schemas_finish_and_validate(gguf: LoadedModel, schema: dict[str, Any]) -> None:
    reasons = []
    for seed in range(4):
        text, reason = answer(gguf, schema, seed)
        reasons.append(reason)
        if reason == "stop":
            validate(text, schema)
    assert "stop" in reasons  # the property above is not vacuous: bounded schemas finish


# -- ONNX (onnxruntime-genai guidance) -----------------------------------------------------------
@pytest.fixture(scope="module")
def onnx(tiny_onnx: Path) -> Iterator[LoadedModel]:
    from slmctl.backends.onnx import OnnxGenaiBackend

    model = OnnxGenaiBackend().load(tiny_onnx, LoadOptions(num_ctx=512, num_thread=1))
    yield model
    model.close()


@pytest.mark.parametrize("schema", [s for s in FIXED if s.get("type") != "number"] + [  # its decimals rarely end
    {"type": "integer", "exclusiveMinimum": -3, "maximum": -1},
    {"type": ["string", "null"], "maxLength": 2},
    {"$defs": {"n": {"type": "object", "properties": {"k": {"type": "array", "items": {"$ref": "#/$defs/n"},
                                                            "maxItems": 2}}, "additionalProperties": False}},
     "$ref": "#/$defs/n"},
], ids=lambda s: json.dumps(s)[:40])
def test_onnx_guidance_answers_validate(onnx: LoadedModel, schema: dict[str, Any]) -> None:
    reasons = []
    for seed in range(6):
        text, reason = answer(onnx, schema, seed, num_predict=128)
        reasons.append(reason)
        if reason == "stop":
            validate(text, schema)
    assert "stop" in reasons
