"""Concurrent samples (``slmctl bench --concurrency N``, N > 1): one model, N requests generating at once.

The model is loaded once with ``slots=N`` and driven by a :class:`~slmctl.engine.runner.ThreadRunner`
with N slots, as ``serve --parallel N`` drives it: a GGUF model decodes the N requests together
(continuous batching); a model that cannot batch (ONNX) runs them one after the other, the rest
waiting in the runner's queue, so its figures show the queueing honestly. The N requests are submitted
at once (``--prompt-tokens`` prompt tokens each, exactly ``--gen-tokens`` generated, end-of-sequence
ignored); each one's results stream to a sink of its own, as ``serve`` streams them to its clients.

Each stream's prompt is cut from the synthetic text at its own offset, so no request can reuse another's
KV entries through a prefix cache. Timestamps are taken on the runner's worker thread as it delivers:
the end of a request when its statistics arrive, its first token that moment less its decode time
(first to last token), so a first token that decodes to no text yet still counts. From them: the
aggregate decode rate (every stream's generated tokens over the wall time of the phase, first submission
to last end), time to first token per request as its client saw it (queueing and batched prefill
included) with p50 and p95, per-stream decode rates, and ``peak_streams``: the most requests generating
at the same moment (N when they were decoded together, 1 when they queued).
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from slmctl.errors import OperationFailed, UsageError
from slmctl.services.bench.matrix import label
from slmctl.services.bench.model import BenchConfig, Sample, StreamSample
from slmctl.services.bench.stats import percentile
from slmctl.services.bench.workload import PeakGpuMemory, PeakMemory, check_fits, load_options, synthetic_prompt

if TYPE_CHECKING:
    from slmctl.backends.base import Stats
    from slmctl.engine import Engine
    from slmctl.engine.runner import ThreadRunner

#: How many tokens apart the prompts of two streams start in the synthetic text.
STREAM_OFFSET = 1


class Countdown:
    """Set once ``count`` requests have ended: one wake-up for whoever waits on all of them, instead of a
    thread per request competing with the worker for the interpreter while the others still decode."""

    def __init__(self, count: int) -> None:
        self._left = count
        self._lock = threading.Lock()
        self.all_ended = threading.Event()
        if count <= 0:
            self.all_ended.set()

    def one_ended(self) -> None:
        with self._lock:
            self._left -= 1
            if self._left == 0:
                self.all_ended.set()


@dataclass
class Client:
    """One concurrent request: the :class:`~slmctl.backends.base.Sink` its results go to, with the
    moments (``perf_counter_ns``) it was submitted and ended, and its statistics or error."""

    index: int
    countdown: Countdown
    submitted: int = 0
    ended: int = 0
    stats: Stats | None = None
    error: BaseException | None = None

    def chunk(self, text: str) -> None:
        """Text is not kept: a benchmark reads the counts and timings only."""

    def done(self, stats: Stats) -> None:
        self.ended = time.perf_counter_ns()
        self.stats = stats
        self.countdown.one_ended()

    def fail(self, error: BaseException) -> None:
        self.ended = time.perf_counter_ns()
        self.error = error
        self.countdown.one_ended()

    @property
    def first_token(self) -> int:
        """When its first token was sampled: the end less the decode time (first to last token)."""
        return self.ended - (self.stats.eval_duration if self.stats else 0)


def peak_overlap(intervals: list[tuple[int, int]]) -> int:
    """The most ``(start, end)`` intervals open at one moment (an interval ending when another starts
    does not overlap it)."""
    events = sorted([(end, -1) for _, end in intervals] + [(start, 1) for start, _ in intervals])
    open_now = peak = 0
    for _, step in events:
        open_now += step
        peak = max(peak, open_now)
    return peak


def run_clients(runner: ThreadRunner, requests: list) -> list[Client]:
    """Submit ``requests`` (``GenerateRequest`` objects) to ``runner`` together, stamped with that moment,
    and wait until every one has ended. Returns the clients in request order.

    They reach the runner as one arrival (:meth:`ThreadRunner.start_together`), so its worker admits all
    of them in the same pass, as N clients arriving at once; submitted one by one, the worker could wake
    between two submissions on a busy machine and finish a tiny model's first answer before the last
    request came (a thread per client would stagger the arrivals by milliseconds too).
    """
    from slmctl.engine.runner import Job

    countdown = Countdown(len(requests))
    clients = [Client(index, countdown) for index in range(len(requests))]
    submitted = time.perf_counter_ns()
    for client in clients:
        client.submitted = submitted
    try:
        runner.start_together([Job(request, client, threading.Event()) for client, request in zip(clients, requests)])
    except BaseException as error:  # noqa: BLE001 - reported by the caller, with the others
        for client in clients:
            client.fail(error)
    countdown.all_ended.wait()  # a hung runtime is stopped by --isolate's timeout, as for one request
    return clients


def stream_samples(config: BenchConfig, clients: list[Client]) -> list[StreamSample]:
    """Per-request figures, times relative to the first submission; a failed request, or one that did
    not process or generate exactly the configured tokens, raises."""
    for client in clients:
        if client.error is not None:
            raise client.error
    start = min(client.submitted for client in clients)
    streams = []
    for client in clients:
        stats = client.stats
        assert stats is not None  # every client ended, without error
        if stats.eval_count != config.gen_tokens or stats.prompt_eval_count != config.prompt_tokens:
            raise OperationFailed(
                f"{label(config)}: request {client.index + 1} of {len(clients)}: expected {config.prompt_tokens} "
                f"prompt and {config.gen_tokens} generated tokens, got {stats.prompt_eval_count} and "
                f"{stats.eval_count} (stopped: {stats.done_reason})",
                "the runtime stopped early; try a larger --ctx or fewer --gen-tokens")
        first = client.first_token
        streams.append(StreamSample(
            submitted_ms=(client.submitted - start) / 1e6, first_token_ms=(first - start) / 1e6,
            done_ms=(client.ended - start) / 1e6, ttft_ms=(first - client.submitted) / 1e6,
            prompt_tokens=stats.prompt_eval_count, prompt_cached=stats.prompt_cached_count,
            gen_tokens=stats.eval_count, gen_ms=stats.eval_duration / 1e6, gen_tps=stats.eval_rate))
    return streams


def build_sample(config: BenchConfig, repetition: int, clients: list[Client], *, device: str, load_ms: float,
                 peak_rss: int, peak_gpu_memory: int | None = None) -> Sample:
    """The sample of one concurrent phase: medians and percentiles across its requests."""
    streams = stream_samples(config, clients)
    prompt_ms = [c.stats.prompt_eval_duration / 1e6 for c in clients if c.stats is not None]
    wall_ms = max(s.done_ms for s in streams) - min(s.submitted_ms for s in streams)
    ttfts = [s.ttft_ms for s in streams]
    gen_ms = statistics.median(s.gen_ms for s in streams)
    median_prompt_ms = statistics.median(prompt_ms)
    return Sample(
        config=config.key, repetition=repetition, device=device, load_ms=load_ms,
        ttft_ms=percentile(ttfts, 50), prompt_tokens=config.prompt_tokens, prompt_ms=median_prompt_ms,
        prompt_tps=config.prompt_tokens / (median_prompt_ms / 1000) if median_prompt_ms > 0 else 0.0,
        gen_tokens=config.gen_tokens, gen_ms=gen_ms,
        gen_tps=config.gen_tokens / (gen_ms / 1000) if gen_ms > 0 else 0.0,
        peak_rss=peak_rss, peak_gpu_memory=peak_gpu_memory,
        agg_tps=sum(s.gen_tokens for s in streams) / (wall_ms / 1000) if wall_ms > 0 else 0.0,
        ttft_p95_ms=percentile(ttfts, 95), wall_ms=wall_ms,
        peak_streams=peak_overlap([(c.first_token, c.ended) for c in clients]), streams=streams)


def run_concurrent_sample(engine: Engine, config: BenchConfig, repetition: int) -> Sample:
    """Load ``config``'s model once with ``config.concurrency`` slots, run that many requests at once,
    measure (the model is closed after). See the module docstring for what each figure means."""
    from slmctl.backends.base import GenerateRequest
    from slmctl.engine.loader import load_plan
    from slmctl.engine.runner import ThreadRunner
    from slmctl.options import SamplingOptions

    n = config.concurrency
    manifest = engine.manifest(config.model)
    if manifest.format != config.format:
        raise UsageError(f"model '{config.model}' is a {manifest.format} model, not {config.format}")
    plan = engine.plan(manifest, load_options(config), device=config.device)
    with PeakMemory() as memory, PeakGpuMemory() as gpu:
        model = load_plan(plan, engine.backends, slots=n)
        started = time.perf_counter_ns()
        try:
            runner = ThreadRunner(model, name=config.model, slots=n)  # a GGUF model makes its N-slot batch here
        except BaseException:
            model.close()
            raise
        load_ms = (model.info.load_duration + time.perf_counter_ns() - started) / 1e6
        try:
            check_fits(config, model.info.context_length)
            options = SamplingOptions(num_predict=config.gen_tokens, seed=1)
            requests = [GenerateRequest(options, tokens=synthetic_prompt(model, config.prompt_tokens,
                                                                         offset=i * STREAM_OFFSET), ignore_eos=True)
                        for i in range(n)]
            clients = run_clients(runner, requests)
            info = model.info
        finally:
            runner.close()
    return build_sample(config, repetition, clients, device=info.device, load_ms=load_ms, peak_rss=memory.peak,
                        peak_gpu_memory=gpu.peak)
