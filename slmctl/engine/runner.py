"""Runners: one worker owns one loaded model and feeds each request's chunks to whoever asked.

Consumers never drive the runtime: a request becomes a :class:`Job` on the runner's queue, the worker
generates it and pushes text chunks, then the statistics (or the error), to the job's :class:`Sink`.
A slow reader therefore never holds the model, and a cancelled job (a closed generation, a client that
went away) stops at the next token, or is skipped while still queued.

:class:`ThreadRunner` keeps the model in this process (``run``, and inside a runner process);
:class:`~slmctl.engine.process_runner.ProcessRunner` keeps it in a child process (``serve``). Both
offer the same interface, :class:`Runner`. The worker runs one job at a time, or, given ``slots`` and a
model that can batch (:meth:`~slmctl.backends.base.LoadedModel.batch`), decodes up to ``slots`` jobs
together a step at a time, admitting queued jobs as slots free up (continuous batching).
"""

from __future__ import annotations

import collections
import itertools
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any

from slmctl.backends.base import Batch, GenerateRequest, Generation, LoadedInfo, LoadedModel, Sink, Stats
from slmctl.engine.embed_batch import EmbedCoalescer
from slmctl.errors import RunnerCrashed
from slmctl.options import SamplingOptions

#: The model methods a runner forwards besides generation (``call``).
CALLS = frozenset({"embed", "tokenize", "detokenize", "prompt_text", "prompt_tokens", "unsupported"})


@dataclass
class Job:
    request: GenerateRequest
    sink: Sink
    cancel: threading.Event


class Channel:
    """A :class:`Sink` a consumer thread reads back as events, in order."""

    def __init__(self) -> None:
        self._events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()

    def chunk(self, text: str) -> None:
        self._events.put(("chunk", text))

    def done(self, stats: Stats) -> None:
        self._events.put(("done", stats))

    def fail(self, error: BaseException) -> None:
        self._events.put(("error", error))

    def relay(self, stats: Stats, cancel: threading.Event) -> Iterator[str]:
        """The chunks until the job ends; copies the worker's statistics into ``stats``."""
        while True:
            kind, value = self._events.get()
            if kind == "chunk":
                yield value
            elif kind == "done":
                for item in fields(Stats):
                    if item.name != "total_duration":
                        setattr(stats, item.name, getattr(value, item.name))
                return
            else:
                raise value


class Runner(ABC):
    """One loaded model behind a queue. Safe to use from any thread."""

    info: LoadedInfo

    def __init__(self) -> None:
        self._pending = 0
        self._count_lock = threading.Lock()
        #: Called (from a worker thread) each time the runner becomes idle.
        self.on_idle: Callable[[], None] | None = None

    @property
    def pending(self) -> int:
        """Requests queued or running."""
        return self._pending

    @property
    @abstractmethod
    def alive(self) -> bool:
        """False once the runner stopped (closed, or its process died)."""

    def hold(self) -> None:
        """Count one more request (the scheduler holds one while it hands the runner out)."""
        with self._count_lock:
            self._pending += 1

    def release(self) -> None:
        with self._count_lock:
            self._pending -= 1
            idle = self._pending == 0
        if idle and self.on_idle is not None:
            self.on_idle()

    @abstractmethod
    def submit(self, request: GenerateRequest) -> Generation:
        """Queue ``request``; the returned generation yields its chunks as the worker produces them."""

    @abstractmethod
    def stream(self, request: GenerateRequest, sink: Sink) -> Callable[[], None]:
        """Queue ``request`` with its results going straight to ``sink`` (from a worker or reader
        thread); returns the function that cancels it."""

    @abstractmethod
    def call(self, method: str, *args: Any) -> Any:
        """Run one of :data:`CALLS` on the model (embed, tokenize, ...) and return its result."""

    def embed(self, texts: list[str]) -> list[list[float]]:
        return self.call("embed", texts)

    def tokenize(self, text: str) -> list[int]:
        return self.call("tokenize", text)

    def prompt_text(self, request: GenerateRequest) -> str:
        return self.call("prompt_text", request)

    def unsupported(self, options: SamplingOptions) -> list[str]:
        return self.call("unsupported", options)

    @abstractmethod
    def close(self) -> None:
        """Stop the worker and free the model (waits for the job in progress to notice)."""


def run_job(model: LoadedModel, job: Job) -> None:
    """Generate ``job`` on ``model``, delivering everything to its sink (never raises)."""
    if job.cancel.is_set():
        job.sink.done(Stats(done_reason="cancel"))
        return
    try:
        generation = model.generate(job.request, job.cancel)
        for chunk in generation:
            job.sink.chunk(chunk)
    except BaseException as error:  # noqa: BLE001 - every failure goes to the one waiting for it
        job.sink.fail(error)
        return
    job.sink.done(generation.stats or Stats())


class _Releasing:
    """A sink that counts its job as finished just before passing the end on, so that whoever hears
    "done" finds the runner already idle (a ``keep_alive: 0`` unload already under way)."""

    def __init__(self, sink: Sink, release: Callable[[], None]) -> None:
        self._sink, self._release = sink, release

    def chunk(self, text: str) -> None:
        self._sink.chunk(text)

    def done(self, stats: Stats) -> None:
        self._release()
        self._sink.done(stats)

    def fail(self, error: BaseException) -> None:
        self._release()
        self._sink.fail(error)


class ThreadRunner(Runner):
    """The model in this process, driven by one worker thread.

    The worker also makes the batch (its context and warm-up decodes): the thread that first decodes on a
    llama.cpp context owns the OpenMP thread team its decodes use, and a team made by another thread left
    ~6 % of the CPU idle between steps (1.88 of 2 cores busy instead of 2.00, and as much less speed).

    ``on_step`` (batching only) is called by the worker after it admitted jobs, after each step and once
    it stops: what the sinks were told since the last call may go out together.
    """

    def __init__(self, model: LoadedModel, *, name: str = "model", slots: int | None = None,
                 on_step: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.model = model
        self._on_step = on_step or (lambda: None)
        self.info = model.info
        #: Decodes several jobs together (None: one job at a time); made by the worker.
        self.batch: Batch | None = None
        #: Concurrent embed calls share backend calls.
        self.embedder = EmbedCoalescer(model.embed)
        #: Jobs to run, each arrival a list (one job, or several that came together); None stops the worker.
        self._jobs: queue.SimpleQueue[list[Job] | None] = queue.SimpleQueue()
        self._closed = False
        made: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._work, args=(slots, made.put), name=f"runner:{name}",
                                        daemon=True)
        self._worker.start()
        error = made.get()
        if error is not None:  # the batch could not be made (no memory for its KV cache, say)
            self._closed = True
            raise error

    @property
    def alive(self) -> bool:
        return not self._closed

    def start(self, request: GenerateRequest, sink: Sink, cancel: threading.Event) -> None:
        """Queue one job whose results go to ``sink``."""
        self.start_together([Job(request, sink, cancel)])

    def start_together(self, jobs: list[Job]) -> None:
        """Queue ``jobs`` as one arrival: a batching worker admits them all in the same pass, as it would
        requests that came at one moment (queued one by one, the worker may wake in between and start the
        first alone)."""
        if self._closed:
            raise RunnerCrashed("this model was unloaded", "try again: the next request loads it")
        if not jobs:
            return
        for _ in jobs:
            self.hold()
        self._jobs.put(list(jobs))

    def stream(self, request: GenerateRequest, sink: Sink) -> Callable[[], None]:
        cancel = threading.Event()
        self.start(request, sink, cancel)
        return cancel.set

    def submit(self, request: GenerateRequest) -> Generation:
        channel, cancel = Channel(), threading.Event()
        submitted = time.perf_counter_ns()
        self.start(request, channel, cancel)
        return Generation(channel.relay, cancel=cancel, submitted_ns=submitted)

    def call(self, method: str, *args: Any) -> Any:
        if method not in CALLS:
            raise ValueError(f"not a runner call: {method}")
        self.hold()
        try:
            if method == "embed":
                return self.embedder.embed(*args)
            return getattr(self.model, method)(*args)
        finally:
            self.release()

    def _work(self, slots: int | None, made: Callable[[BaseException | None], None]) -> None:
        try:
            self.batch = self.model.batch(slots) if slots else None
        except BaseException as error:  # noqa: BLE001 - raised by the constructor, in the caller's thread
            made(error)
            return
        made(None)
        if self.batch is not None:
            self._work_batched(self.batch)
            return
        while (arrived := self._jobs.get()) is not None:
            for job in arrived:
                try:
                    run_job(self.model, Job(job.request, _Releasing(job.sink, self.release), job.cancel))
                except Exception:  # noqa: BLE001 - a sink that cannot take the end has nobody left to tell
                    pass

    def _work_batched(self, batch: Batch) -> None:
        """Admit queued jobs while slots are free, step the batch, repeat; block only when idle."""
        waiting: collections.deque[Job] = collections.deque()
        stopping = False
        while not stopping:
            try:
                arrived = self._jobs.get(block=not batch.active and not waiting)
                while True:
                    if arrived is None:
                        stopping = True
                        break
                    waiting.extend(Job(job.request, _Releasing(job.sink, self.release), job.cancel) for job in arrived)
                    arrived = self._jobs.get_nowait()
            except queue.Empty:
                pass
            for job in [j for j in waiting if j.cancel.is_set()]:
                waiting.remove(job)
                job.sink.done(Stats(done_reason="cancel"))
            while waiting and not stopping:
                try:
                    free = batch.free_slots()  # may start the runtime's batching engine, which may fail
                except BaseException as error:  # noqa: BLE001 - told to the job that waits first
                    waiting.popleft().sink.fail(error)
                    continue
                if not free:
                    break
                job = waiting.popleft()
                try:
                    batch.add(job.request, job.sink, job.cancel)
                except BaseException as error:  # noqa: BLE001 - this job's failure, told to its reader
                    job.sink.fail(error)
            self._on_step()  # what admission told (a refusal, a cancel) goes before a step's wait
            if batch.active and not stopping:
                try:
                    batch.step()
                except BaseException as error:  # noqa: BLE001 - a failed step ends its generations
                    batch.fail_all(error)
            self._on_step()
        error = RunnerCrashed("this model was unloaded", "try again: the next request loads it")
        for job in waiting:
            job.sink.fail(error)
        batch.close()
        self._on_step()

    def close(self, *, free_model: bool = True) -> None:
        """Stop the worker (jobs still queued fail) and free the model, unless ``free_model`` is False
        (the model is shared with another runner)."""
        if self._closed:
            return
        self._closed = True
        self._jobs.put(None)
        if threading.current_thread() is not self._worker:
            self._worker.join()
        if free_model:
            self.model.close()


_ids = itertools.count(1)


def next_id() -> int:
    """A process-wide unique job id."""
    return next(_ids)
