"""The engine's runners and scheduler: consumers never drive the runtime, queues are bounded, idle
models unload (keep-alive, LRU, memory), crashed runners are replaced, runner processes report errors."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from slmctl.backends.base import GenerateRequest, Generation, LoadedInfo, Stats
from slmctl.engine import Engine, LoadPlan, Scheduler, SchedulerSettings
from slmctl.engine.process_runner import ProcessRunner, decode_error, encode_error
from slmctl.engine.runner import Channel, Job, Runner, ThreadRunner
from slmctl.errors import ContextOverflow, OperationFailed, RunnerCrashed, ServerBusy
from slmctl.options import LoadOptions, SamplingOptions
from slmctl.services.importer import import_path
from slmctl.store import ModelStore


@pytest.fixture
def engine(tmp_path: Path, tiny_gguf: Path) -> Engine:
    store = ModelStore(tmp_path / "models")
    import_path(store, tiny_gguf, "tiny")
    return Engine(store)


def ask(n: int, **options: Any) -> GenerateRequest:
    return GenerateRequest(SamplingOptions(num_predict=n, seed=1, **options), prompt="hello")


def test_the_worker_generates_whether_or_not_the_consumer_reads(engine: Engine) -> None:
    runner = ThreadRunner(engine.load(engine.manifest("tiny"), LoadOptions(num_ctx=256)))
    try:
        unread = runner.submit(ask(40))  # nobody reads it
        second = runner.submit(ask(5))
        assert len(second.complete()) > 0 and second.stats.eval_count == 5
        assert unread.complete() and unread.stats.eval_count == 40  # produced meanwhile, read later
        assert runner.pending == 0
    finally:
        runner.close()


def test_a_cancelled_queued_request_never_runs(engine: Engine) -> None:
    runner = ThreadRunner(engine.load(engine.manifest("tiny"), LoadOptions(num_ctx=256)))
    try:
        first, queued = runner.submit(ask(200)), runner.submit(ask(200))
        queued.cancel()
        first.complete()
        assert queued.complete() == "" and queued.stats.done_reason == "cancel" and queued.stats.eval_count == 0
    finally:
        runner.close()


class FakeRunner(Runner):
    """A runner whose generations finish at once (or when released), for scheduler tests."""

    def __init__(self, plan: LoadPlan) -> None:
        super().__init__()
        self.plan = plan
        self.info = LoadedInfo("fake", "cpu", 128, 0)
        self.closed = False
        self.gate = threading.Event()
        self.gate.set()

    @property
    def alive(self) -> bool:
        return not self.closed

    def stream(self, request: GenerateRequest, sink: Any) -> Any:
        self.hold()

        def work() -> None:
            self.gate.wait()
            sink.chunk("ok")
            sink.done(Stats(eval_count=1))
            self.release()

        threading.Thread(target=work, daemon=True).start()
        return lambda: None

    def submit(self, request: GenerateRequest) -> Generation:
        channel = Channel()
        self.stream(request, channel)
        return Generation(channel.relay)

    def call(self, method: str, *args: Any) -> Any:
        return None

    def close(self) -> None:
        self.closed = True


def plan(name: str, size: int = 100) -> LoadPlan:
    return LoadPlan(model=name, digest=f"sha256:{name}", format="gguf", path=Path(name), options=LoadOptions(),
                    device="cpu", size=size)


def make_scheduler(**settings: Any) -> tuple[Scheduler, list[FakeRunner]]:
    made: list[FakeRunner] = []

    def factory(p: LoadPlan) -> FakeRunner:
        made.append(FakeRunner(p))
        return made[-1]

    memory = settings.pop("memory", 10**12)
    return Scheduler(SchedulerSettings(**settings), runner_factory=factory, available_memory=lambda: memory), made


def test_requests_share_a_loaded_model_and_the_queue_is_bounded() -> None:
    scheduler, made = make_scheduler(parallel=1, max_queue=1)
    first = scheduler.runner(plan("a"))
    first.release()
    made[0].gate.clear()  # hold the generations
    running = [scheduler.generate(plan("a"), ask(1)) for _ in range(2)]
    with pytest.raises(ServerBusy) as busy:
        scheduler.generate(plan("a"), ask(1))
    assert busy.value.retry_after >= 1 and len(made) == 1
    made[0].gate.set()
    assert [g.complete() for g in running] == ["ok", "ok"]
    scheduler.close()


def test_keep_alive_zero_unloads_when_idle_and_a_timer_unloads_later() -> None:
    scheduler, made = make_scheduler(keep_alive=0.2)
    scheduler.generate(plan("a"), ask(1), keep_alive=0).complete()
    deadline = time.monotonic() + 5
    while scheduler.loaded() or not made[0].closed:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    scheduler.generate(plan("b"), ask(1)).complete()
    assert [e.plan.model for e in scheduler.loaded()] == ["b"]
    while scheduler.loaded():
        assert time.monotonic() < deadline + 5, "the keep-alive timer did not unload 'b'"
        time.sleep(0.05)
    forever = scheduler.runner(plan("c"), keep_alive=None)
    forever.release()
    assert scheduler.loaded()[0].expires_at is None
    scheduler.close()


def test_least_recently_used_idle_model_is_evicted_for_count_and_memory() -> None:
    scheduler, made = make_scheduler(max_loaded=2)
    for name in ("a", "b", "a", "c"):
        scheduler.generate(plan(name), ask(1)).complete()
    assert sorted(e.plan.model for e in scheduler.loaded()) == ["a", "c"]  # b was the least recently used
    scheduler.close()
    small, _ = make_scheduler(max_loaded=5, memory=100)
    for name in ("a", "b"):
        small.generate(plan(name, size=100), ask(1)).complete()
    assert [e.plan.model for e in small.loaded()] == ["b"]  # a was evicted: b would not fit beside it
    small.close()


def test_a_crashed_runner_is_replaced_on_the_next_request() -> None:
    scheduler, made = make_scheduler()
    scheduler.generate(plan("a"), ask(1)).complete()
    made[0].closed = True  # as when its process died
    assert scheduler.generate(plan("a"), ask(1)).complete() == "ok" and len(made) == 2
    scheduler.close()


def test_errors_cross_the_process_boundary_with_their_kind() -> None:
    error = decode_error(encode_error(ContextOverflow("the prompt is 9 tokens but the context holds 8", "shorten")))
    assert isinstance(error, ContextOverflow) and error.hint == "shorten" and error.http_status == 400
    unknown = decode_error(encode_error(ValueError("boom")))
    assert "ValueError: boom" in unknown.message and unknown.http_status == 500


def test_process_runner_generates_and_reports_a_failed_load(engine: Engine, tmp_path: Path) -> None:
    manifest = engine.manifest("tiny")
    good = engine.plan(manifest, LoadOptions(num_ctx=256))
    runner = ProcessRunner(good)
    try:
        generation = runner.submit(ask(6))
        assert generation.complete() and generation.stats.eval_count == 6 and runner.tokenize("hello")
        with pytest.raises(ContextOverflow):
            runner.submit(GenerateRequest(SamplingOptions(), prompt="word " * 400)).complete()
    finally:
        runner.close()
    assert not runner.alive
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(OperationFailed) as failed:  # llama.cpp's own reason, raised in the server process
        ProcessRunner(LoadPlan(model="broken", digest="sha256:x", format="gguf", path=broken,
                               options=LoadOptions(), device="cpu"))
    assert "refused broken.gguf" in failed.value.message and not isinstance(failed.value, RunnerCrashed)


def test_jobs_started_together_are_admitted_in_the_same_pass() -> None:
    """``start_together`` is one arrival: the batching worker admits every job of it before its next step
    (``slmctl bench --concurrency N`` relies on it), and each job's sink hears its own end."""
    from types import SimpleNamespace

    class Recording:
        """A batch of 4 slots whose step ends every sequence admitted so far."""

        def __init__(self) -> None:
            self.events: list[str] = []
            self.running: list[Any] = []

        @property
        def active(self) -> int:
            return len(self.running)

        def free_slots(self) -> int:
            return 4 - len(self.running)

        def add(self, request: GenerateRequest, sink: Any, cancel: threading.Event) -> None:
            self.events.append("add")
            self.running.append(sink)

        def step(self) -> None:
            self.events.append("step")
            for sink in self.running:
                sink.done(Stats(eval_count=len(self.running)))
            self.running.clear()

        def close(self) -> None: ...

    recording = Recording()
    info = LoadedInfo("gguf", "cpu", 64, 0, None)
    runner = ThreadRunner(SimpleNamespace(info=info, embed=None, batch=lambda slots: recording), name="fake", slots=4)
    try:
        for round_ in range(20):  # the worker idles between rounds: each round wakes it afresh
            channels = [Channel() for _ in range(3)]
            runner.start_together([Job(GenerateRequest(SamplingOptions(), prompt=f"{round_}.{i}"), channel,
                                       threading.Event()) for i, channel in enumerate(channels)])
            ends = [Stats() for _ in channels]
            for channel, stats in zip(channels, ends):
                assert list(channel.relay(stats, threading.Event())) == []
            assert [end.eval_count for end in ends] == [3, 3, 3]  # all three ended in the same step
        assert recording.events == ["add", "add", "add", "step"] * 20
    finally:
        runner.close(free_model=False)


def test_the_worker_makes_the_batch_it_decodes_and_a_failure_reaches_the_caller() -> None:
    """The batch is made on the runner's worker thread (llama.cpp's OpenMP team belongs to the thread
    that decodes first); a batch that cannot be made fails the constructor, in the caller's thread."""
    from types import SimpleNamespace

    makers: list[threading.Thread] = []

    class Batch:
        active = 0

        def close(self) -> None: ...

    def batch(slots: int) -> Batch:
        makers.append(threading.current_thread())
        return Batch()

    info = LoadedInfo("gguf", "cpu", 64, 0, None)
    runner = ThreadRunner(SimpleNamespace(info=info, embed=None, batch=batch), name="fake", slots=2)
    try:
        assert isinstance(runner.batch, Batch) and makers == [runner._worker]
    finally:
        runner.close(free_model=False)

    def failing(slots: int) -> Batch:
        raise OperationFailed("llama.cpp could not make a context for 2 parallel sequences")

    with pytest.raises(OperationFailed, match="could not make a context"):
        ThreadRunner(SimpleNamespace(info=info, embed=None, batch=failing), name="fake", slots=2)
