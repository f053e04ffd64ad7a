"""Stop strings matched on streamed text: nothing after (or of) a stop string is ever emitted."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from slmctl.backends.stopping import StopMatcher


def stream(stops: list[str], pieces: list[str]) -> tuple[str, bool]:
    matcher = StopMatcher(stops)
    out = "".join(matcher.feed(p) for p in pieces)
    return out + matcher.flush(), matcher.stopped


def expected(text: str, stops: list[str]) -> tuple[str, bool]:
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


def test_stop_split_across_pieces_does_not_leak() -> None:
    assert stream(["<|end|>"], ["Hello <|", "end", "|> more"]) == ("Hello ", True)


def test_partial_stop_prefix_is_released_at_the_end() -> None:
    assert stream(["###"], ["a #", "#"]) == ("a ##", False)


@given(st.text(alphabet="ab#x", max_size=40), st.lists(st.text(alphabet="ab#", min_size=1, max_size=4), max_size=3),
       st.data())
def test_streamed_output_equals_text_cut_at_first_stop(text: str, stops: list[str], data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=8)))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
    assert stream(stops, pieces) == expected(text, stops)
