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
    """Character by character: cut where the first stop string completes (the longest one there)."""
    for end in range(1, len(text) + 1):
        done = [s for s in stops if s and text[:end].endswith(s)]
        if done:
            return text[: end - max(map(len, done))], True
    return text, False


def test_stop_split_across_pieces_does_not_leak() -> None:
    assert stream(["<|end|>"], ["Hello <|", "end", "|> more"]) == ("Hello ", True)


def test_the_stop_that_completes_first_wins_whatever_the_chunking() -> None:
    assert stream(["a", "#aa"], ["#a", "a"]) == stream(["a", "#aa"], ["#aa"]) == ("#", True)


def test_partial_stop_prefix_is_released_at_the_end() -> None:
    assert stream(["###"], ["a #", "#"]) == ("a ##", False)


@given(st.text(alphabet="ab#x", max_size=40), st.lists(st.text(alphabet="ab#", min_size=1, max_size=4), max_size=3),
       st.data())
def test_streamed_output_equals_text_cut_at_first_stop(text: str, stops: list[str], data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=8)))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
    assert stream(stops, pieces) == expected(text, stops)
