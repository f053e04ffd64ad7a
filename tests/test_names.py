"""Model name parsing: valid names round-trip, anything that could escape the store is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slmctl.errors import ExitCode, UsageError
from slmctl.names import ModelRef, parse_model_ref

segment = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True).filter(lambda s: s not in (".", ".."))
tag = st.from_regex(r"[a-z0-9_][a-z0-9._-]{0,20}", fullmatch=True)


@given(st.lists(segment, min_size=1, max_size=3), tag)
def test_valid_names_round_trip(parts: list[str], t: str) -> None:
    ref = parse_model_ref(f"{'/'.join(parts)}:{t}")
    assert ref == ModelRef("/".join(parts), t)
    assert parse_model_ref(str(ref)) == ref


def test_tag_defaults_to_latest_and_names_are_case_insensitive() -> None:
    assert parse_model_ref("Tiny") == ModelRef("tiny", "latest")


@pytest.mark.parametrize("bad", ["", "  ", "../x", "a/../b", "/abs/path", "a\\b", "a:", "x\x00y", "~/m", "a//b",
                                 "a/b/c/d", "a:b/c"])
def test_escaping_or_malformed_names_are_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_model_ref(bad)
    assert info.value.exit_code == ExitCode.USAGE


@given(st.text(max_size=40))
def test_any_text_parses_or_is_a_usage_error_and_never_escapes(text: str) -> None:
    try:
        ref = parse_model_ref(text)
    except UsageError:
        return
    assert ".." not in ref.name.split("/") and not ref.name.startswith("/") and "\\" not in ref.name
