"""The scheduler: which models are loaded, for how long, and who waits.

It owns the loaded models, keyed by :attr:`LoadPlan.key` (model digest + load options + device +
embedding + provider options), each behind a :class:`~slmctl.engine.runner.Runner` (in this process,
or in a runner process when ``isolate`` is set, as ``serve`` does). It applies:

- keep-alive: a model stays loaded for ``keep_alive`` seconds after its last request ends (the
  request's own value wins; ``None`` = forever; ``0`` = unload as soon as it is idle);
- a maximum of loaded models, and free memory: before a load, idle models are evicted, least recently
  used first; when none is idle the load waits (up to ``load_timeout``) for one to become idle;
- a bounded queue per model: more than ``parallel + max_queue`` requests waiting is :class:`ServerBusy`;
- crashed runners are dropped and the next request loads the model again.

Nothing here imports a web framework; the CLI and the server are both clients.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slmctl.backends.base import GenerateRequest, Generation
from slmctl.engine.loader import LoadPlan, load_plan
from slmctl.engine.runner import Runner, Sink, ThreadRunner
from slmctl.errors import ServerBusy

#: Ollama's default number of models loaded at once on a CPU machine.
DEFAULT_MAX_LOADED = 3


@dataclass(frozen=True)
class SchedulerSettings:
    keep_alive: float | None = 300.0
    max_loaded: int = DEFAULT_MAX_LOADED
    #: Requests a model serves at once (decoded together where the model can batch, see ``batching``).
    parallel: int = 1
    max_queue: int = 512
    #: Decode up to ``parallel`` requests of a model together (GGUF: continuous batching; ONNX models on
    #: GroupQueryAttention: static batches on onnxruntime-genai's Engine; other models: one at a time).
    batching: bool = False
    #: Load each model in its own runner process.
    isolate: bool = False
    load_timeout: float = 600.0
    #: Evict idle models when a load would not fit in free memory.
    check_memory: bool = True


@dataclass
class Loaded:
    """One loaded model as the scheduler tracks it."""

    plan: LoadPlan
    runner: Runner
    keep_alive: float | None
    loaded_at: float
    last_used: float
    #: Wall-clock time when it will be unloaded (None = never, or busy with no expiry).
    expires_at: float | None = None


def charge_load_time(generation: Generation, load_ns: int) -> None:
    """Count a load this request waited for in its statistics (Ollama's ``load_duration``)."""
    if generation.stats is not None:
        generation.stats.load_duration += load_ns
        generation.stats.total_duration += load_ns


def _available_memory() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


class Scheduler:
    """Loads models on demand, shares them between requests and unloads them when idle."""

    def __init__(self, settings: SchedulerSettings | None = None, *,
                 runner_factory: Callable[[LoadPlan], Runner] | None = None,
                 available_memory: Callable[[], int] = _available_memory) -> None:
        self.settings = settings or SchedulerSettings()
        self._factory = runner_factory or self._default_factory
        self._available = available_memory
        self._loaded: dict[tuple[Any, ...], Loaded] = {}
        self._lock = threading.Condition()
        self._load_lock = threading.Lock()
        self._closed = False
        self._reaper: threading.Thread | None = None

    def _default_factory(self, plan: LoadPlan) -> Runner:
        if self.settings.isolate:
            from slmctl.engine.process_runner import ProcessRunner

            return ProcessRunner(plan, load_timeout=self.settings.load_timeout, slots=self.slots)
        return ThreadRunner(load_plan(plan, slots=self.slots), name=plan.model, slots=self.slots)

    @property
    def slots(self) -> int | None:
        """Generations a runner decodes together (None: one at a time, without a batch)."""
        return self.settings.parallel if self.settings.batching else None

    # -- acquiring a model --------------------------------------------------------------------
    def runner(self, plan: LoadPlan, keep_alive: float | None | str = "default") -> Runner:
        """The runner serving ``plan``, loading it first when needed, with one request held on it: the
        caller calls ``release()`` once it has submitted its work (so nothing unloads it in between)."""
        return self.acquire(plan, keep_alive)[0]

    def acquire(self, plan: LoadPlan, keep_alive: float | None | str = "default") -> tuple[Runner, int]:
        """:meth:`runner`, plus the nanoseconds this call spent loading the model (0 when it was loaded)."""
        ttl = self.settings.keep_alive if keep_alive == "default" else keep_alive
        with self._lock:
            loaded = self._hold_loaded(plan, ttl)
        if loaded is not None:
            return loaded, 0
        with self._load_lock:  # one load at a time, as Ollama: loads compete for the same memory
            with self._lock:
                loaded = self._hold_loaded(plan, ttl)  # another request may have loaded it meanwhile
                if loaded is not None:
                    return loaded, 0
                if self._closed:
                    raise ServerBusy("the server is shutting down", "try again on another replica", retry_after=5)
                self._make_room(plan)
            start = time.perf_counter_ns()
            runner = self._factory(plan)
            load_ns = time.perf_counter_ns() - start
            now = time.time()
            entry = Loaded(plan, runner, ttl, now, now)
            runner.on_idle = lambda: self._idle(entry)
            with self._lock:
                self._loaded[plan.key] = entry
                self._touch(entry, ttl)
                runner.hold()
                self._lock.notify_all()
            return runner, load_ns

    def _hold_loaded(self, plan: LoadPlan, ttl: float | None) -> Runner | None:
        """The loaded runner for ``plan`` with a request held on it, or None (called under the lock)."""
        entry = self._usable(plan)
        if entry is None:
            return None
        self._touch(entry, ttl)
        entry.runner.hold()
        return entry.runner

    def _usable(self, plan: LoadPlan) -> Loaded | None:
        entry = self._loaded.get(plan.key)
        if entry is not None and not entry.runner.alive:
            del self._loaded[plan.key]  # crashed: the caller loads it again
            return None
        return entry

    def _touch(self, entry: Loaded, ttl: float | None) -> None:
        entry.keep_alive = ttl
        entry.last_used = time.time()
        entry.expires_at = None if ttl is None or ttl < 0 else entry.last_used + ttl

    def _make_room(self, plan: LoadPlan) -> None:
        """Evict idle models until one more fits (count and memory); wait while all are busy."""
        deadline = time.monotonic() + self.settings.load_timeout
        limit = max(1, self.settings.max_loaded)
        while True:
            for key in [k for k, e in self._loaded.items() if not e.runner.alive]:
                del self._loaded[key]
            short_of_memory = self.settings.check_memory and self._loaded and \
                self._available() < plan.size * 1.1
            if len(self._loaded) < limit and not short_of_memory:
                return
            idle = sorted((e for e in self._loaded.values() if e.runner.pending == 0), key=lambda e: e.last_used)
            if idle:
                self._unload_locked(idle[0])
                continue
            if short_of_memory and len(self._loaded) < limit:
                return  # nothing idle to free: try the load anyway and let the runtime say
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServerBusy(f"{len(self._loaded)} models are loaded and busy; '{plan.model}' cannot load yet",
                                 "try again later, or raise --max-loaded", retry_after=5)
            self._lock.wait(timeout=min(remaining, 1.0))

    # -- using a model ------------------------------------------------------------------------
    def _admit(self, runner: Runner, plan: LoadPlan) -> None:
        if runner.pending - 1 >= self.settings.parallel + self.settings.max_queue:  # -1: our own hold
            raise ServerBusy(f"too many requests are waiting for '{plan.model}' "
                             f"({runner.pending} queued or running)", "try again in a moment", retry_after=1)

    def generate(self, plan: LoadPlan, request: GenerateRequest,
                 keep_alive: float | None | str = "default") -> Generation:
        """Queue ``request`` on ``plan``'s model (loading it first); chunks arrive as they are made."""
        runner, load_ns = self.acquire(plan, keep_alive)
        try:
            generation = self.submit(runner, plan, request)
        finally:
            runner.release()
        if load_ns:
            generation.on_finish.append(lambda gen: charge_load_time(gen, load_ns))
        return generation

    def submit(self, runner: Runner, plan: LoadPlan, request: GenerateRequest) -> Generation:
        """Queue ``request`` on a runner the caller holds (from :meth:`acquire`), if its queue has room."""
        self._admit(runner, plan)
        return runner.submit(request)

    def stream(self, runner: Runner, plan: LoadPlan, request: GenerateRequest, sink: Sink) -> Callable[[], None]:
        """:meth:`submit`, with the results going straight to ``sink``; returns the cancel function."""
        self._admit(runner, plan)
        return runner.stream(request, sink)

    def call(self, plan: LoadPlan, method: str, *args: Any, keep_alive: float | None | str = "default") -> Any:
        """Run a model call (embed, tokenize, prompt_text, ...) on ``plan``'s model."""
        runner = self.runner(plan, keep_alive)
        try:
            self._admit(runner, plan)
            return runner.call(method, *args)
        finally:
            runner.release()

    def _idle(self, entry: Loaded) -> None:
        with self._lock:
            entry.last_used = time.time()
            ttl = entry.keep_alive
            entry.expires_at = None if ttl is None or ttl < 0 else entry.last_used + ttl
            if ttl == 0 and self._loaded.get(entry.plan.key) is entry:
                self._unload_locked(entry)
            elif entry.expires_at is not None:
                self._start_reaper()
            self._lock.notify_all()

    # -- unloading ----------------------------------------------------------------------------
    def _unload_locked(self, entry: Loaded) -> None:
        if self._loaded.get(entry.plan.key) is entry:
            del self._loaded[entry.plan.key]
        threading.Thread(target=entry.runner.close, name="unload", daemon=True).start()

    def unload(self, model: str) -> int:
        """Unload every loaded instance of ``model`` (a model name); returns how many."""
        with self._lock:
            entries = [e for e in self._loaded.values() if e.plan.model == model]
            for entry in entries:
                del self._loaded[entry.plan.key]
        for entry in entries:
            entry.runner.close()
        return len(entries)

    def expire(self, model: str) -> None:
        """Unload every instance of ``model`` once its current requests end (``keep_alive: 0``)."""
        with self._lock:
            for entry in [e for e in self._loaded.values() if e.plan.model == model]:
                self._touch(entry, 0)
                if entry.runner.pending == 0:
                    self._unload_locked(entry)

    def _start_reaper(self) -> None:
        if self._reaper is None:
            self._reaper = threading.Thread(target=self._reap, name="keep-alive", daemon=True)
            self._reaper.start()

    def _reap(self) -> None:
        with self._lock:
            while not self._closed:
                now = time.time()
                for entry in list(self._loaded.values()):
                    if entry.expires_at is not None and entry.expires_at <= now and entry.runner.pending == 0:
                        self._unload_locked(entry)
                due = [e.expires_at for e in self._loaded.values() if e.expires_at is not None]
                self._lock.wait(timeout=max(0.05, min(due) - now) if due else 1.0)

    def loaded(self) -> list[Loaded]:
        """The loaded models, most recently used first."""
        with self._lock:
            for key in [k for k, e in self._loaded.items() if not e.runner.alive]:
                del self._loaded[key]
            return sorted(self._loaded.values(), key=lambda e: e.last_used, reverse=True)

    def busy(self) -> bool:
        """True when some model's queue is full."""
        limit = self.settings.parallel + self.settings.max_queue
        return any(e.runner.pending >= limit for e in self.loaded())

    def close(self) -> None:
        """Unload everything (callers drain requests first)."""
        with self._lock:
            self._closed = True
            entries = list(self._loaded.values())
            self._loaded.clear()
            self._lock.notify_all()
        for entry in entries:
            entry.runner.close()

    def __enter__(self) -> Scheduler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
