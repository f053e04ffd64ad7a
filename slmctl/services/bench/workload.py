"""What every benchmark sample shares, alone or concurrent: the synthetic prompt, the load options, the
check that prompt and generation fit the context, and the peak-memory samplers (resident, and GPU through
NVML).

:mod:`.runner` (one request at a time) and :mod:`.concurrent` (N at once) both measure with these.
"""

from __future__ import annotations

import os
import platform
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from slmctl.errors import OperationFailed, UsageError
from slmctl.hardware.accelerators import nvml_process_memory, open_nvml
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
#: How often the GPU memory sampler asks NVML (each call walks the GPUs' process lists).
GPU_INTERVAL = 0.05


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
    """Polls a memory reading from a background thread; ``peak`` is the maximum seen.

    Used as a context manager around the measured work. By default it reads the resident memory of this
    process (``psutil``) every :data:`RSS_INTERVAL` seconds, plus once on entry and once on exit, so a
    short run still has a value. A reading that fails is skipped: it never breaks the benchmark.
    """

    def __init__(self, read: Callable[[], int] | None = None, interval: float = RSS_INTERVAL) -> None:
        if read is None:
            import psutil

            process = psutil.Process()
            read = lambda: process.memory_info().rss  # noqa: E731
        self._read = read
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="slmctl-bench-memory", daemon=True)
        self.peak = 0

    def _sample(self) -> None:
        try:
            value = self._read()
        except Exception:  # noqa: BLE001 - a failed poll must never break the benchmark
            return
        if value > self.peak:
            self.peak = value

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


class PeakGpuMemory:
    """The most device memory this process held on NVIDIA GPUs during the block (NVML's per-process
    figure, polled like :class:`PeakMemory`); ``peak`` is None where there is no NVML (no NVIDIA driver:
    "not measured") or NVML never answered."""

    def __init__(self, interval: float = GPU_INTERVAL, open_library: Callable[[], Any] | None = None) -> None:
        self._interval = interval
        self._open = open_library or (lambda: open_nvml(platform.system()))
        self._lib: Any = None
        self._sampler: PeakMemory | None = None
        self._answered = False
        self.peak: int | None = None

    def _read(self) -> int:
        value = nvml_process_memory(self._lib, os.getpid())
        self._answered = True
        return value

    def __enter__(self) -> PeakGpuMemory:
        try:
            self._lib = self._open()
        except Exception:  # noqa: BLE001 - a broken driver install: not measured
            self._lib = None
        if self._lib is not None:
            self._sampler = PeakMemory(self._read, self._interval).__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._sampler is None:
            return
        self._sampler.__exit__(*exc)
        self._lib.nvmlShutdown()
        self.peak = self._sampler.peak if self._answered else None


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
