"""The token loop every backend shares: from a runtime's stream of token ids to text chunks.

A backend supplies the token iterator (whose first step evaluates the prompt), how to recognise an
end-of-sequence token and how to decode one token; this loop applies stop strings, the token limit and
cancellation, and fills the statistics the same way on every runtime (time to first token = prompt
evaluation; generation time = from the first token to the last). When the backend can score tokens,
each chunk carries the log-probabilities of the tokens it holds (:class:`Chunk`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from slmctl.backends.base import Chunk, Stats, TokenLogprob
from slmctl.backends.stopping import StopMatcher


class TextStream:
    """One sequence's way from token ids to text: end tokens, stop strings, the token limit, statistics
    and log-probabilities. A single generation drives it from a loop (:func:`stream_text`); a batch of
    sequences drives one per sequence, one token per step."""

    def __init__(self, *, is_end: Callable[[int], bool], decode: Callable[[int], str], flush: Callable[[], str],
                 stops: Sequence[str], limit: int, stats: Stats,
                 score: Callable[[int], TokenLogprob] | None = None) -> None:
        self._is_end, self._decode, self._flush, self._score = is_end, decode, flush, score
        self._matcher = StopMatcher(stops)
        self._scored: list[TokenLogprob] = []
        self._limit = limit
        self.stats = stats
        stats.done_reason = "length"
        self.count = 0
        self.finished = limit <= 0
        self._start = self._first = time.perf_counter_ns()

    def _emit(self, text: str) -> str:
        if self._score is None:
            return text
        chunk = Chunk(text, tuple(self._scored))
        self._scored.clear()
        return chunk

    def accept(self, token: int) -> str:
        """Take the next sampled token; return the text now safe to show ("" if none). Sets
        ``finished`` when the sequence has ended (then call :meth:`finish`)."""
        if self.count == 0:
            self._first = time.perf_counter_ns()
            self.stats.prompt_eval_duration = self.stats.time_to_first_token = self._first - self._start
        if self._is_end(token):
            self.stats.done_reason = "stop"
            self.finished = True
            return ""
        self.count += 1
        if self._score is not None:
            self._scored.append(self._score(token))
        text = self._matcher.feed(self._decode(token))
        if self._matcher.stopped:
            self.stats.done_reason = "stop"
            self.finished = True
        elif self.count >= self._limit:
            self.finished = True
        return self._emit(text) if text else ""

    def finish(self) -> str:
        """The end of the sequence (however it ended): fills the counts; returns the held-back text."""
        self.finished = True
        self.stats.eval_count = self.count
        self.stats.eval_duration = time.perf_counter_ns() - self._first if self.count else 0
        rest = self._matcher.feed(self._flush()) + self._matcher.flush()
        if rest or (self._scored and not self._matcher.stopped):  # a stop string's tokens are not the answer's
            return self._emit(rest)
        return ""


def stream_text(tokens: Iterator[int], *, is_end: Callable[[int], bool], decode: Callable[[int], str],
                flush: Callable[[], str], stops: Sequence[str], limit: int, stats: Stats,
                cancel: threading.Event, score: Callable[[int], TokenLogprob] | None = None) -> Iterator[str]:
    """Yield the text of ``tokens`` until an end token, a stop string, ``limit`` tokens or ``cancel``;
    with ``score``, as :class:`Chunk` objects carrying the log-probabilities of their tokens."""
    stream = TextStream(is_end=is_end, decode=decode, flush=flush, stops=stops, limit=limit, stats=stats, score=score)
    try:
        for token in tokens:
            text = stream.accept(token)
            if text:
                yield text
            if stream.finished or cancel.is_set():
                break
    finally:
        close = getattr(tokens, "close", None)
        if close is not None:
            close()
        rest = stream.finish()
    if rest:
        yield rest


def score_token(logits: Any, token: int, top: int, piece: Callable[[int], bytes]) -> TokenLogprob:
    """The log-probability of ``token`` under ``logits`` (one row, the whole vocabulary) and the ``top``
    most likely tokens; ``piece`` gives a token's bytes."""
    import numpy as np

    row = np.asarray(logits, dtype=np.float64).reshape(-1)
    peak = row.max()
    logprobs = row - (peak + np.log(np.exp(row - peak).sum()))

    def entry(tid: int) -> tuple[str, float, tuple[int, ...]]:
        raw = piece(tid)
        return raw.decode("utf-8", errors="replace"), float(logprobs[tid]), tuple(raw)

    best: list[int] = []
    if top > 0:
        candidates = np.argpartition(-logprobs, min(top, len(row) - 1))[:top]
        best = sorted((int(t) for t in candidates), key=lambda t: -logprobs[t])
    text, value, raw = entry(token)
    return TokenLogprob(text, value, raw, tuple(entry(t) for t in best))
