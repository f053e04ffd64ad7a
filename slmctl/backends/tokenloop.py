"""The token loop every backend shares: from a runtime's stream of token ids to text chunks.

A backend supplies the token iterator (whose first step evaluates the prompt), how to recognise an
end-of-sequence token and how to decode one token; this loop applies stop strings, the token limit and
cancellation, and fills the statistics the same way on every runtime (time to first token = prompt
evaluation; generation time = from the first token to the last).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence

from slmctl.backends.base import Stats
from slmctl.backends.stopping import StopMatcher


def stream_text(tokens: Iterator[int], *, is_end: Callable[[int], bool], decode: Callable[[int], str],
                flush: Callable[[], str], stops: Sequence[str], limit: int, stats: Stats,
                cancel: threading.Event) -> Iterator[str]:
    """Yield the text of ``tokens`` until an end token, a stop string, ``limit`` tokens or ``cancel``."""
    matcher = StopMatcher(stops)
    stats.done_reason = "length"
    count = 0
    start = first = time.perf_counter_ns()
    try:
        for token in tokens:
            if count == 0:
                first = time.perf_counter_ns()
                stats.prompt_eval_duration = stats.time_to_first_token = first - start
            if is_end(token):
                stats.done_reason = "stop"
                break
            count += 1
            text = matcher.feed(decode(token))
            if text:
                yield text
            if matcher.stopped:
                stats.done_reason = "stop"
                break
            if count >= limit or cancel.is_set():
                break
    finally:
        close = getattr(tokens, "close", None)
        if close is not None:
            close()
        stats.eval_count = count
        stats.eval_duration = time.perf_counter_ns() - first if count else 0
    rest = matcher.feed(flush()) + matcher.flush()
    if rest:
        yield rest
