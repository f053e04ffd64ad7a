"""The option table shared by --param, Modelfile PARAMETER and the API."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slmctl.errors import ExitCode, UsageError
from slmctl.options import (
    ALL_KEYS,
    LLAMA_CPP_NAMES,
    LoadOptions,
    SamplingOptions,
    build_options,
    canonical_key,
    parse_param_pairs,
)


def test_defaults_are_ollamas() -> None:
    s, load = SamplingOptions(), LoadOptions()
    assert (s.temperature, s.top_k, s.top_p, s.min_p, s.repeat_penalty, s.repeat_last_n, s.seed, s.num_predict) == (
        0.8, 40, 0.9, 0.0, 1.0, 64, -1, -1)
    assert (load.num_ctx, load.num_batch, load.num_gpu) == (4096, 512, -1)


def test_parse_pairs_converts_types_and_accumulates_stop() -> None:
    values = parse_param_pairs(["temperature=0.5", "stop=</s>", "stop=###", "context_length=1024", "use_mmap=false"])
    assert values == {"temperature": 0.5, "stop": ["</s>", "###"], "num_ctx": 1024, "use_mmap": False}


def test_value_with_equals_sign_is_kept_whole() -> None:
    assert parse_param_pairs(["stop=a=b"]) == {"stop": ["a=b"]}


@pytest.mark.parametrize("pair, fragment", [
    ("temprature=1", "did you mean 'temperature'"),
    ("top_p=2", "top_p"),
    ("seed=abc", "seed"),
    ("num_ctx=-5", "num_ctx"),
    ("novalue", "KEY=VALUE"),
])
def test_bad_params_are_usage_errors_naming_the_problem(pair: str, fragment: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_param_pairs([pair])
    assert info.value.exit_code == ExitCode.USAGE
    assert fragment in f"{info.value.message} {info.value.hint}"


def test_unknown_key_hint_lists_valid_keys() -> None:
    with pytest.raises(UsageError) as info:
        canonical_key("bogus")
    assert "temperature" in info.value.hint and "num_ctx" in info.value.hint


def test_layers_merge_later_wins_and_split_load_from_sampling() -> None:
    load, sampling = build_options({"temperature": 0.1, "num_ctx": 256}, {"temperature": 0.7})
    assert sampling.temperature == 0.7 and load.num_ctx == 256


def test_every_sampling_option_is_mapped_or_handled_by_backends() -> None:
    handled_by_backend = {"seed", "stop", "num_predict", "repeat_last_n"}
    assert set(SamplingOptions.model_fields) - set(LLAMA_CPP_NAMES) == handled_by_backend
    assert set(LoadOptions.model_fields) <= set(LLAMA_CPP_NAMES)


@given(st.sampled_from(ALL_KEYS), st.text(max_size=12))
def test_parsing_any_string_never_raises_anything_but_usage_error(key: str, raw: str) -> None:
    try:
        parse_param_pairs([f"{key}={raw}"])
    except UsageError:
        pass


@given(st.floats(min_value=0, max_value=5, allow_nan=False))
def test_temperature_round_trips_through_text(value: float) -> None:
    assert parse_param_pairs([f"temperature={value!r}"])["temperature"] == value


@pytest.mark.parametrize(("requested", "limit", "expected"), [(0, 4096, 4096), (-1, 4096, 4096), (2048, 4096, 2048),
                                                              (8192, 4096, 4096), (2048, None, 2048), (2048, 0, 2048)])
def test_the_context_a_model_runs_with(requested: int, limit: int | None, expected: int) -> None:
    from slmctl.options import capped_context

    assert capped_context(requested, limit) == expected
