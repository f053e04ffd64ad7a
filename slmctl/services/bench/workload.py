"""What every benchmark sample shares, alone or concurrent: the synthetic prompt, the load options, the
check that prompt and generation fit the context, and the peak-memory sampler.

:mod:`.runner` (one request at a time) and :mod:`.concurrent` (N at once) both measure with these.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from slmctl.errors import OperationFailed, UsageError
from slmctl.services.bench.matrix import label
from slmctl.services.bench.model import BenchConfig

if TYPE_CHECKING:
    from slmctl.backends.base import LoadedModel

#: The text synthetic prompts are cut from: plain English, so every tokenizer splits it in a typical way.
PARAGRAPH = (
    "The history of computing is a story of people trying to make machines do useful work faster. "
    "Early mechanical calculators could add and subtract, but each new problem needed careful setup "
    "by hand. Later, engineers built electronic machines that stored their programs in memory, so the "
    "same hardware could solve many different problems. Today a small language model can run on a "
    "laptop, answer questions about a document, translate a paragraph, or summarise the notes of a "
    "long meeting in a few seconds, without sending any data over the network."
)

#: How often the memory sampler polls the process (seconds).
RSS_INTERVAL = 0.005


def synthetic_prompt(model: LoadedModel, n: int, *, offset: int = 0) -> tuple[int, ...]:
    """Exactly ``n`` prompt tokens from ``model``'s tokenizer: :data:`PARAGRAPH` repeated and cut to size,
    starting ``offset`` tokens into it (concurrent streams get prompts of their own this way)."""
    if n <= 0:
        return ()
    base = list(model.tokenize(PARAGRAPH))
    if not base:
        raise OperationFailed("the model's tokenizer produced no tokens for the benchmark prompt")
    start = offset % len(base)
    tokens: list[int] = []
    while len(tokens) < start + n:
        tokens.extend(base)
    return tuple(int(t) for t in tokens[start:start + n])


class PeakMemory:
    """Polls the resident memory of this process from a background thread; ``peak`` is the maximum seen.

    Used as a context manager around the measured work. It reads ``psutil.Process().memory_info().rss``
    every :data:`RSS_INTERVAL` seconds, plus once on entry and once on exit, so a short run still has
    a value.
    """

    def __init__(self, interval: float = RSS_INTERVAL) -> None:
        import psutil

        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="slmctl-bench-rss", daemon=True)
        self.peak = 0

    def _sample(self) -> None:
        try:
            rss = self._process.memory_info().rss
        except Exception:  # noqa: BLE001 - a failed poll must never break the benchmark
            return
        if rss > self.peak:
            self.peak = rss

    def _poll(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def __enter__(self) -> PeakMemory:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def load_options(config: BenchConfig):  # -> LoadOptions
    """The load options of ``config``: its threads and context size (0: the defaults)."""
    from slmctl.options import LoadOptions

    if config.ctx:
        return LoadOptions(num_thread=config.threads, num_ctx=config.ctx)
    return LoadOptions(num_thread=config.threads)  # num_ctx: the default (4096, capped at the model's)


def check_fits(config: BenchConfig, room: int) -> None:
    """Refuse a configuration whose prompt and generated tokens do not fit the model's context."""
    if config.prompt_tokens + config.gen_tokens > room:
        raise UsageError(
            f"{label(config)}: {config.prompt_tokens} prompt + {config.gen_tokens} generated tokens "
            f"do not fit the context of {room}",
            "lower --prompt-tokens/--gen-tokens, or raise --ctx (up to the model's context length)")
