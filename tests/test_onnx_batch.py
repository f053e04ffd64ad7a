"""Batching of ONNX generations on onnxruntime-genai's Engine (static batches on CPU), on a tiny
GroupQueryAttention model built at test time.

Greedy decoding is deterministic, so a request must come out the same (text, token count and end
reason) decoded alone on the classic Generator path as in an Engine batch with others of other prompt
lengths and limits, arriving while a batch runs (they wait until it has drained) and ending at
different steps, with guidance, a stop string or a cancel on a neighbour. Prompts are raw text whose
last tokens differ (the tiny model's answer depends mostly on the last few tokens).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from slmctl.backends.base import GenerateRequest, Stats
from slmctl.backends.onnx import OnnxGenaiBackend, OnnxGenaiModel
from slmctl.backends.onnx_batch import OnnxEngineBatch
from slmctl.engine.runner import Channel, ThreadRunner
from slmctl.errors import ContextOverflow, OperationFailed
from slmctl.options import LoadOptions, SamplingOptions
from slmctl.testing.__main__ import main as write_model
from slmctl.testing.tiny_onnx import TinyOnnxSpec, write_tiny_onnx_gqa

PROMPTS = ["hello", "The quick brown fox jumps over the lazy dog", "A chat with slmctl: " * 8 + "you ask",
           "tokens, merges and bytes " * 12 + "make a tokenizer"]
LIMITS = [12, 20, 7, 16]


@pytest.fixture(scope="module")
def gqa_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_onnx_gqa(tmp_path_factory.mktemp("gqa") / "tiny-gqa", TinyOnnxSpec(context_length=1024))


@pytest.fixture(scope="module")
def model(gqa_path: Path) -> Iterator[OnnxGenaiModel]:
    loaded = OnnxGenaiBackend().load(gqa_path, LoadOptions(num_ctx=1024, num_thread=1), slots=4)
    yield loaded
    loaded.close()


@pytest.fixture
def runner(model: OnnxGenaiModel) -> Iterator[ThreadRunner]:
    with_batch = ThreadRunner(model, name="tiny-gqa", slots=4)
    assert isinstance(with_batch.batch, OnnxEngineBatch)
    yield with_batch
    with_batch.close(free_model=False)


def request(text: str, num_predict: int = 16, **fields: object) -> GenerateRequest:
    options = {"temperature": 0, "num_predict": num_predict, **fields.pop("options", {})}  # type: ignore[dict-item]
    return GenerateRequest(SamplingOptions(**options), prompt=text, **fields)  # type: ignore[arg-type]


def alone(model: OnnxGenaiModel, req: GenerateRequest) -> tuple[str, int, str]:
    """The classic path (one Generator): text, generated tokens, end reason."""
    generation = model.generate(req)
    text = generation.complete()
    assert generation.stats is not None
    return text, generation.stats.eval_count, generation.stats.done_reason


def together(runner: ThreadRunner, requests: list[GenerateRequest], delays: list[float]) -> list[tuple[str, int, str]]:
    out: list[tuple[str, int, str]] = [("", -1, "")] * len(requests)

    def go(index: int) -> None:
        time.sleep(delays[index])
        generation = runner.submit(requests[index])
        text = generation.complete()
        assert generation.stats is not None
        out[index] = (text, generation.stats.eval_count, generation.stats.done_reason)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return out


def test_gqa_builder_is_deterministic_and_the_engine_matches_the_generator(gqa_path: Path, tmp_path: Path) -> None:
    again = write_tiny_onnx_gqa(tmp_path / "again", TinyOnnxSpec(context_length=1024))
    for name in ("model.onnx", "genai_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (again / name).read_bytes() == (gqa_path / name).read_bytes()
    assert json.loads((gqa_path / "genai_config.json").read_text())["search"]["past_present_share_buffer"] is True
    written = write_model(["--gqa", str(tmp_path / "cli")])
    assert (written / "model.onnx").read_bytes() == (write_tiny_onnx_gqa(tmp_path / "api") / "model.onnx").read_bytes()
    import onnxruntime_genai as og

    config = og.Config(str(gqa_path))
    config.clear_providers()
    model = og.Model(config)
    tokenizer = og.Tokenizer(model)
    prompts = [(tokenizer.encode(text), n) for text, n in zip(PROMPTS[:3], LIMITS[:3])]

    def generator(prompt: np.ndarray, n: int) -> list[int]:
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(prompt) + n, do_sample=False)
        gen = og.Generator(model, params)
        gen.append_tokens(prompt)
        out = []
        while not gen.is_done():
            gen.generate_next_token()
            out.append(int(gen.get_next_tokens()[0]))
        return out

    engine = og.Engine(model)
    buffer = engine.create_event_buffer(16)

    def batch(items: list[tuple[np.ndarray, int]]) -> list[list[int]]:
        rows: dict[object, list[int]] = {}
        for prompt, n in items:
            handle = engine.create_request()
            options = og.TurnOptions(handle)
            options.set_max_generated_tokens(n)
            options.set_do_sample(False)
            handle.begin_turn(np.asarray(prompt, dtype=np.int32), options)
            rows[handle] = []
        while engine.has_pending_requests():
            for event in engine.run(buffer):
                if event.flags & og.EngineEventFlags.TOKEN:
                    rows[event.request].append(int(event.token))
                if event.flags & og.EngineEventFlags.TURN_FINISHED:
                    event.request.close()
        return list(rows.values())

    solo = [generator(p, n) for p, n in prompts]
    assert [len(tokens) for tokens in solo] == LIMITS[:3] and len({tuple(t) for t in solo}) == 3
    assert batch(prompts[:1]) == solo[:1]
    assert batch(prompts) == solo  # rows of different lengths, ending at different steps


def test_batched_requests_match_their_solo_runs_token_for_token(model: OnnxGenaiModel, runner: ThreadRunner) -> None:
    requests = [request(p, n) for p, n in zip(PROMPTS, LIMITS)]
    solo = [alone(model, r) for r in requests]
    assert len({text for text, _, _ in solo}) == 4 and [count for _, count, _ in solo] == LIMITS
    # more requests than slots, arriving while a batch runs (they wait for it to drain), ending apart
    mixed = requests + requests[::-1]
    assert together(runner, mixed, [0.002 * i for i in range(len(mixed))]) == solo + solo[::-1]


def test_guidance_on_one_sequence_leaves_the_others_free(model: OnnxGenaiModel, runner: ThreadRunner) -> None:
    free = request(PROMPTS[1], 20)
    guided = request(PROMPTS[0], 20, json_format={"enum": ["yes", "no"]})
    solo_free, solo_guided = alone(model, free), alone(model, guided)
    got_free, got_guided = together(runner, [free, guided], [0, 0])
    assert got_free == solo_free and got_guided == solo_guided
    assert json.loads(got_guided[0]) in ("yes", "no") and got_guided[2] == "stop"


def test_cancelling_one_sequence_mid_batch(model: OnnxGenaiModel, runner: ThreadRunner) -> None:
    kept_request = request(PROMPTS[2], 24)
    solo = alone(model, kept_request)
    doomed = runner.submit(request(PROMPTS[3], 400))
    kept = runner.submit(kept_request)
    pieces = iter(doomed)
    next(pieces)
    doomed.cancel()
    assert kept.complete() == solo[0]
    for _ in pieces:
        pass
    assert doomed.stats is not None and doomed.stats.done_reason == "cancel" and doomed.stats.eval_count < 400
    assert alone(model, kept_request) == solo  # the batch drained: the next one runs as usual
    assert together(runner, [kept_request], [0]) == [solo]


def test_a_stop_string_ends_its_row_and_leaves_the_others(model: OnnxGenaiModel, runner: ThreadRunner) -> None:
    plain = [request(p, 20) for p in PROMPTS[:2]]
    text = alone(model, plain[0])[0]
    stop = text[6:9]
    stopped = request(PROMPTS[0], 20, options={"stop": [stop]})
    expected = alone(model, stopped)
    assert expected[0] == text[:text.index(stop)] and expected[2] == "stop"
    assert together(runner, [stopped, plain[1]], [0, 0]) == [expected, alone(model, plain[1])]


def test_logprobs_and_seeded_sampling_run_on_the_classic_path_in_the_batch(model: OnnxGenaiModel,
                                                                            runner: ThreadRunner) -> None:
    scored = request(PROMPTS[1], 8, logprobs=2)
    seeded = request(PROMPTS[2], 12, options={"temperature": 0.9, "seed": 7})
    greedy = request(PROMPTS[3], 10)
    expected = [alone(model, r) for r in (scored, seeded, greedy)]
    assert together(runner, [scored, seeded, greedy], [0, 0, 0]) == expected
    chunks = list(runner.submit(scored))
    assert sum(len(c.logprobs) for c in chunks) == 8 and all(len(lp.top) == 2 for c in chunks for lp in c.logprobs)


def test_end_of_sequence_in_a_batch(tmp_path: Path) -> None:
    path = write_tiny_onnx_gqa(tmp_path / "eos", TinyOnnxSpec(eos_reachable=True, seed=4))
    with OnnxGenaiBackend().load(path, LoadOptions(num_thread=1), slots=4) as eos_model:
        requests = [request(p, 60) for p in PROMPTS] + [request(PROMPTS[0], 60, ignore_eos=True)]
        solo = [alone(eos_model, r) for r in requests]
        assert {reason for _, _, reason in solo[:4]} == {"stop", "length"} and solo[4][1:] == (60, "length")
        eos_runner = ThreadRunner(eos_model, name="eos", slots=4)
        try:
            assert together(eos_runner, requests, [0] * 5) == solo
        finally:
            eos_runner.close(free_model=False)


def test_admission_waits_for_the_static_batch_to_drain(model: OnnxGenaiModel) -> None:
    assert isinstance(model.batch(4), OnnxEngineBatch)
    batch = OnnxEngineBatch(model, 4, gather_s=0)  # no wait for others: it starts at the first step
    sinks = [Channel() for _ in range(3)]
    try:
        assert batch.free_slots() == 4
        batch.add(request(PROMPTS[0], 3), sinks[0], threading.Event())
        batch.add(request(PROMPTS[1], 6), sinks[1], threading.Event())
        with pytest.raises(ContextOverflow):
            batch.add(request("token " * 2000), sinks[2], threading.Event())
        batch.add(request(PROMPTS[2], 0), sinks[2], threading.Event())  # nothing to generate: done at once
        assert list(sinks[2].relay(Stats(), threading.Event())) == []
        assert batch.free_slots() == 2
        steps = 0
        while batch.active:
            batch.step()
            steps += 1
            if batch.active:
                assert batch.free_slots() == 0  # the batch started: nobody joins until it drains
        assert batch.free_slots() == 4
        stats = [Stats(), Stats()]
        texts = ["".join(sinks[i].relay(stats[i], threading.Event())) for i in range(2)]
        assert [s.eval_count for s in stats] == [3, 6] and all(texts)
        assert stats[0].prompt_eval_count == len(model.prompt_tokens(request(PROMPTS[0])))
        assert all(s.prompt_eval_duration > 0 and s.eval_duration > 0 and s.done_reason == "length" for s in stats)
    finally:
        batch.close()


class Recorder:
    """A sink that keeps what it gets."""

    def __init__(self) -> None:
        self.chunks: list[str] = []
        self.stats: Stats | None = None

    def chunk(self, text: str) -> None:
        self.chunks.append(text)

    def done(self, stats: Stats) -> None:
        self.stats = stats

    def fail(self, error: BaseException) -> None:
        raise AssertionError(error)


def test_a_new_batch_waits_for_the_clients_of_the_last_one(model: OnnxGenaiModel) -> None:
    batch = OnnxEngineBatch(model, 4, gather_s=30)

    def add(text: str) -> Recorder:
        sink = Recorder()
        batch.add(request(text, 2), sink, threading.Event())
        return sink

    def drain() -> None:
        while batch.active:
            batch.step()

    try:
        first = add(PROMPTS[0])
        batch.step()
        assert first.chunks  # the first batch ever starts at once
        assert batch.free_slots() == 0  # the runner asks while a request waits for the batch to drain
        drain()
        queued = add(PROMPTS[1])  # what waited; the drained batch's client is expected back as well
        batch.step()
        assert not queued.chunks and batch.free_slots() == 3  # not started: it waits for that client
        back = add(PROMPTS[0])
        batch.step()
        assert queued.chunks and back.chunks  # both rows expected are in: it runs
        drain()
        rows = [add(PROMPTS[1])]  # the two clients come back one after the other
        batch.step()
        assert not rows[0].chunks
        rows.append(add(PROMPTS[0]))
        batch.step()
        assert all(r.chunks for r in rows)
        drain()
        assert all(r.stats and r.stats.eval_count == 2 for r in [first, queued, back, *rows])
    finally:
        batch.close()
    lone = OnnxEngineBatch(model, 4, gather_s=30)
    try:
        for _ in range(3):  # a lone client: batches of one row, that never wait
            sink = Recorder()
            lone.add(request(PROMPTS[2], 2), sink, threading.Event())
            lone.step()
            assert sink.chunks
            while lone.active:
                lone.step()
    finally:
        lone.close()


def og_usage(**counts: int) -> object:
    from types import SimpleNamespace

    return SimpleNamespace(**{"prompt_tokens": 0, "generated_tokens": 0, "cached_prompt_tokens": 0, **counts})


class FakeDynamicEngine:
    """onnxruntime-genai's Engine on its dynamic path, which needs a PagedAttention model and so CUDA or
    WebGPU (none here): every ``run`` gives one token to each turn begun before it, whatever the others
    do, and ends a turn at its token limit or its cancel. Records which requests each run served."""

    class Flags:
        NONE, TOKEN, TURN_FINISHED, FAILED = 0, 1, 2, 4

    class Reasons:
        NONE, EOS, STOP_STRING, MAX_GENERATED_TOKENS, CANCELLED, FAILED = range(6)

    class Capabilities:
        configured_max_batch_size, max_scheduled_tokens = 16, 2048

    class Turn:
        def __init__(self, handle: object) -> None:
            self.limit, self.options = 0, {}

        def set_max_generated_tokens(self, n: int) -> None:
            self.limit = n

        def __getattr__(self, name: str):  # other settings are kept, not used
            return lambda *args: self.options.__setitem__(name, args)

    class Handle:
        def __init__(self, engine: FakeDynamicEngine) -> None:
            self.engine, self.turn, self.generated, self.cancelled, self.closed = engine, None, 0, False, False
            self.cached = 4 * len(engine.created)  # the prompt tokens its prefix cache would have held

        def begin_turn(self, tokens: np.ndarray, turn: FakeDynamicEngine.Turn) -> int:
            self.turn = turn
            self.engine.active.append(self)
            return 1

        def cancel_turn(self, turn_id: int) -> None:
            self.cancelled = True

        def close(self) -> None:
            self.closed = True

    class Event:
        def __init__(self, request: FakeDynamicEngine.Handle, flags: int, token: int = 0, reason: int = 0) -> None:
            self.request, self.flags, self.token, self.finish_reason = request, flags, token, reason
            self.turn_id, self.error_code = 1, 0
            self.usage = og_usage(cached_prompt_tokens=request.cached) if flags & 2 else None

    def __init__(self) -> None:
        self.active: list[FakeDynamicEngine.Handle] = []
        self.runs: list[set[int]] = []
        self.created: list[FakeDynamicEngine.Handle] = []
        self.TurnOptions, self.EngineEventFlags, self.FinishReason = self.Turn, self.Flags, self.Reasons

    def Engine(self, model: object) -> FakeDynamicEngine:  # noqa: N802 - the og module's name
        return self

    def get_capabilities(self) -> object:
        return self.Capabilities()

    def create_event_buffer(self, capacity: int) -> object:
        return object()

    def create_request(self) -> FakeDynamicEngine.Handle:
        self.created.append(self.Handle(self))
        return self.created[-1]

    def has_pending_requests(self) -> bool:
        return bool(self.active)

    def run(self, buffer: object) -> list[FakeDynamicEngine.Event]:
        events, self.runs = [], [*self.runs, {id(h) for h in self.active}]
        for handle in list(self.active):
            if handle.cancelled:
                events.append(self.Event(handle, self.Flags.TURN_FINISHED, reason=self.Reasons.CANCELLED))
            else:
                handle.generated += 1
                done = handle.generated >= handle.turn.limit
                events.append(self.Event(handle, self.Flags.TOKEN | (self.Flags.TURN_FINISHED if done else 0),
                                         token=20 + handle.generated,
                                         reason=self.Reasons.MAX_GENERATED_TOKENS if done else 0))
                if not done:
                    continue
            self.active.remove(handle)
        return events


def test_a_paged_attention_model_batches_continuously(model: OnnxGenaiModel) -> None:
    """On the Engine's dynamic path a request joins the running batch at the next step, and leaves it when
    it ends, instead of waiting for the batch to drain (the static path's test above)."""
    fake = FakeDynamicEngine()
    batch = OnnxEngineBatch(model, 4, continuous=True)
    batch._og = fake

    def add(limit: int) -> Recorder:
        sink = Recorder()
        batch.add(request(PROMPTS[1], limit), sink, threading.Event())
        return sink

    try:
        first = add(6)
        batch.step()
        batch.step()
        assert len(first.chunks) == 2 and batch.free_slots() == 3  # running, and open to newcomers
        second = add(2)
        batch.step()
        assert len(fake.runs[-1]) == 2 and len(second.chunks) == 1  # it joined the running batch
        batch.step()
        assert second.stats is not None and first.stats is None  # it left first, the other goes on
        third = add(1)
        while batch.active:
            batch.step()
        assert [s.stats.eval_count for s in (first, second, third)] == [6, 2, 1]  # type: ignore[union-attr]
        assert all(s.stats.done_reason == "length" for s in (first, second, third))  # type: ignore[union-attr]
        assert [s.stats.prompt_cached_count for s in (first, second, third)] == [0, 4, 8]  # type: ignore[union-attr]
        assert len(fake.runs) == 6 and len(fake.created) == 3 and all(h.closed for h in fake.created)
    finally:
        batch.close()


def test_a_model_configured_for_dynamic_batching_is_batched_continuously(gqa_path: Path, tmp_path: Path) -> None:
    """``engine.dynamic_batching`` in genai_config.json marks a PagedAttention model: loaded for batching, it
    gets a continuous batch; on the CPU the Engine refuses it, and the runner tells each request so."""
    import shutil

    paged = tmp_path / "paged"
    shutil.copytree(gqa_path, paged)
    config = json.loads((paged / "genai_config.json").read_text())
    config["engine"] = {"dynamic_batching": {"block_size": 256, "max_batch_size": 16}}
    (paged / "genai_config.json").write_text(json.dumps(config))
    with OnnxGenaiBackend().load(paged, LoadOptions(num_thread=1), slots=4) as loaded:
        assert loaded.engine_continuous and loaded.batch(4).continuous  # type: ignore[union-attr]
        paged_runner = ThreadRunner(loaded, name="paged", slots=4)
        try:
            generations = [paged_runner.submit(request(PROMPTS[0], 4)) for _ in range(2)]
            for generation in generations:
                with pytest.raises(OperationFailed, match="batching engine"):
                    generation.complete()
        finally:
            paged_runner.close(free_model=False)


def test_six_concurrent_requests_on_four_slots_all_complete(runner: ThreadRunner) -> None:
    requests = [request(PROMPTS[i % 4], 8 + i, options={"temperature": 0.8}) for i in range(6)]
    generations = [runner.submit(r) for r in requests]
    for i, generation in enumerate(generations):
        assert generation.complete()
        assert generation.error is None and generation.stats is not None
        assert generation.stats.eval_count == 8 + i and generation.stats.done_reason == "length"


def test_a_plain_op_model_falls_back_to_one_request_at_a_time(tiny_onnx: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    with OnnxGenaiBackend().load(tiny_onnx, LoadOptions(num_thread=1), slots=4) as plain:
        with caplog.at_level(logging.INFO, logger="slmctl.backends.onnx"):
            assert plain.batch(4) is None and plain.batch(4) is None
        assert len([r for r in caplog.records if "one request at a time" in r.getMessage()]) == 1
        plain_runner = ThreadRunner(plain, name="plain", slots=4)
        try:
            requests = [request(p, 6) for p in PROMPTS[:3]]
            expected = [alone(plain, r) for r in requests]
            assert plain_runner.batch is None
            assert together(plain_runner, requests, [0, 0, 0]) == expected
        finally:
            plain_runner.close(free_model=False)


def test_serve_answers_four_concurrent_generations_on_the_gqa_model(model: OnnxGenaiModel, gqa_path: Path,
                                                                    tmp_path: Path) -> None:
    from serve_fixtures import Served

    from slmctl.services.importer import import_path
    from slmctl.store import ModelStore

    import_path(ModelStore(tmp_path / "home" / "models"), gqa_path, "gqa")
    requests = [request(p, n) for p, n in zip(PROMPTS, LIMITS)]
    expected = [alone(model, r)[0] for r in requests]
    served = Served(tmp_path / "home", "--parallel", "4", log_dir=tmp_path)
    try:
        def post(index: int) -> str:
            body = {"model": "gqa", "prompt": PROMPTS[index], "raw": True, "stream": False,
                    "options": {"temperature": 0, "num_predict": LIMITS[index], "num_ctx": 1024}}
            reply = httpx.post(served.url + "/api/generate", json=body, timeout=60)
            reply.raise_for_status()
            return reply.json()["response"]

        got: list[str] = [""] * 4
        threads = [threading.Thread(target=lambda i=i: got.__setitem__(i, post(i))) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
        assert got == expected, served.log()
    finally:
        served.stop()
