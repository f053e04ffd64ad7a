"""Continuous batching of GGUF generations (one llama.cpp context, several sequences, one decode per step).

Greedy decoding is deterministic, so a request must come out token for token the same whether it runs
alone or in a batch with others arriving and leaving at different steps, with a grammar on a neighbour,
after a cancelled neighbour, prefilled in several chunks, or resumed from a cached prefix. (llama.cpp's
sums run over the KV cells in use, so a near-tie between two tokens can flip when the batch around a
sequence changes; the tiny model's logits are far apart, and answers here are kept short.)
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slmctl.backends.base import ChatMessage, GenerateRequest
from slmctl.backends.gguf import LlamaCppBackend, LlamaCppModel
from slmctl.engine.runner import ThreadRunner
from slmctl.options import LoadOptions, SamplingOptions
from slmctl.testing.tiny_gguf import TinyGGUFSpec, write_tiny_gguf
from waiting import wait_for

PROMPTS = ["hello", "the small model " * 6, "chat token " * 25, "world and llama " * 20]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppModel]:
    path = write_tiny_gguf(tmp_path_factory.mktemp("batch") / "tiny.gguf",
                           TinyGGUFSpec(eos_reachable=True, context_length=2048))
    loaded = LlamaCppBackend().load(path, LoadOptions(num_ctx=1024, num_thread=1, num_batch=32), slots=4)
    yield loaded
    loaded.close()


@pytest.fixture
def runner(model: LlamaCppModel) -> Iterator[ThreadRunner]:
    with_batch = ThreadRunner(model, name="tiny", slots=4)
    yield with_batch
    with_batch.close(free_model=False)


def request(text: str, **options: object) -> GenerateRequest:
    options = {"temperature": 0, "num_predict": 24, **options}
    return GenerateRequest(SamplingOptions(**options), messages=(ChatMessage("user", text),))


def alone(runner: ThreadRunner, text: str, **options: object) -> str:
    return runner.submit(request(text, **options)).complete()


def together(runner: ThreadRunner, requests: list[GenerateRequest], delays: list[float]) -> list[str]:
    out: list[str] = [""] * len(requests)

    def go(index: int) -> None:
        time.sleep(delays[index])
        out[index] = runner.submit(requests[index]).complete()

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return out


def test_batched_requests_match_their_solo_runs_token_for_token(runner: ThreadRunner) -> None:
    solo = [alone(runner, p) for p in PROMPTS]
    assert len(set(solo)) > 1
    # more requests than slots, arriving at different steps (a long prompt needs several 32-token chunks)
    mixed = PROMPTS + PROMPTS[::-1]
    assert together(runner, [request(p) for p in mixed], [0.001 * i for i in range(len(mixed))]) == solo + solo[::-1]


def test_a_grammar_on_one_sequence_leaves_the_others_free(runner: ThreadRunner) -> None:
    solo = alone(runner, PROMPTS[1])
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    constrained = GenerateRequest(SamplingOptions(temperature=0, num_predict=64), json_format=schema,
                                  messages=(ChatMessage("user", PROMPTS[1]),))
    free, json_text = together(runner, [request(PROMPTS[1]), constrained], [0, 0.001])
    assert free == solo
    assert json.loads(json_text) in ({"ok": True}, {"ok": False})


def test_cancelling_one_sequence_mid_batch(runner: ThreadRunner) -> None:
    solo = alone(runner, PROMPTS[2])
    doomed = runner.submit(request(PROMPTS[3], num_predict=400))
    kept = runner.submit(request(PROMPTS[2]))
    pieces = iter(doomed)
    next(pieces)
    doomed.cancel()
    assert kept.complete() == solo
    for _ in pieces:
        pass
    assert doomed.stats.done_reason == "cancel" and doomed.stats.eval_count < 400


def test_prefix_reuse_gives_the_cold_answer_and_counts_its_hits(model: LlamaCppModel, runner: ThreadRunner) -> None:
    history = (ChatMessage("system", "You are terse. " * 10), ChatMessage("user", "hello there"))
    first = GenerateRequest(SamplingOptions(temperature=0, num_predict=16), messages=history)
    answer = runner.submit(first).complete()
    follow = GenerateRequest(SamplingOptions(temperature=0, num_predict=16),
                             messages=(*history, ChatMessage("assistant", answer), ChatMessage("user", "and then?")))
    warm = runner.submit(follow)
    warm_text = warm.complete()
    assert warm.stats.prompt_cached_count > len(model.prompt_tokens(first)) // 2
    cold_runner = ThreadRunner(model, name="cold", slots=2)
    try:
        cold = cold_runner.submit(follow)
        assert cold.complete() == warm_text and cold.stats.prompt_cached_count == 0
    finally:
        cold_runner.close(free_model=False)


def test_sixteen_requests_on_four_slots_all_complete_with_their_limits(runner: ThreadRunner) -> None:
    generations = [runner.submit(request(PROMPTS[i % 4], num_predict=8 + i, temperature=0.8, seed=i))
                   for i in range(16)]
    for i, generation in enumerate(generations):
        generation.complete()
        assert generation.stats.eval_count <= 8 + i and generation.error is None


def test_a_model_loaded_for_batching_keeps_its_context_for_each_sequence(model: LlamaCppModel) -> None:
    from slmctl.errors import OperationFailed

    assert model.info.context_length == 1024 and model._llm.n_ctx() < 1024  # no unused second KV cache
    with pytest.raises(OperationFailed, match="batched"):
        model.generate(request("hello"))


def test_a_prompt_over_the_context_fails_alone(runner: ThreadRunner) -> None:
    from slmctl.errors import ContextOverflow

    neighbour = runner.submit(request(PROMPTS[0], num_predict=40))
    with pytest.raises(ContextOverflow):
        alone(runner, "token " * 2000)
    assert neighbour.complete() and neighbour.error is None


class Sink:
    """A sink of direct ``GgufBatch`` tests: keeps failures, counts ends."""

    def __init__(self, failures: list[BaseException]) -> None:
        self.failures, self.ended = failures, False

    def chunk(self, text: str) -> None: ...

    def done(self, stats: object) -> None:
        self.ended = True

    def fail(self, error: BaseException) -> None:
        self.failures.append(error)
        self.ended = True


@pytest.fixture
def direct(tmp_path) -> Iterator[tuple[object, list[BaseException]]]:
    """A 4-slot batch driven step by step on this thread, whose 4 slots cache prompts 0 to 3 (6 tokens
    each), so that prompts starting the same way go back to their slots; and the failures it delivered."""
    path = write_tiny_gguf(tmp_path / "tiny.gguf", TinyGGUFSpec(context_length=2048))
    loaded = LlamaCppBackend().load(path, LoadOptions(num_ctx=256, num_thread=1, num_batch=64), slots=4)
    batch = loaded.batch(4)
    failures: list[BaseException] = []
    try:
        for i in range(4):
            admit(batch, failures, i, 1)
        while batch.active:
            batch.step()
        yield batch, failures
    finally:
        batch.close()
        loaded.close()


def admit(batch, failures: list[BaseException], prompt: int, predict: int, extra: tuple[int, ...] = ()) -> Sink:
    sink = Sink(failures)
    tokens = tuple(100 + 10 * prompt + k for k in range(6)) + extra
    batch.add(GenerateRequest(SamplingOptions(temperature=0, num_predict=predict), tokens=tokens), sink,
              threading.Event())
    return sink


def written(batch) -> list[tuple[int, int, int]]:
    """The last step's batch: (sequence id, position, logits wanted) of each token."""
    raw = batch._batch
    return [(raw.seq_id[i][0], raw.pos[i], raw.logits[i]) for i in range(raw.n_tokens)]


def test_a_step_writes_its_batch_in_slot_order(direct) -> None:
    """With a KV stream per sequence llama.cpp decodes a batch in one pass only where its sequence ids rise
    by one: sequences admitted in any slot order (here prefix reuse sends them to slots 3, 2, 1, 0) are
    written in slot order."""
    batch, failures = direct
    for prompt in (3, 2, 1, 0):
        admit(batch, failures, prompt, 4, (7,))
    assert [s.slot for s in batch._running.values()] == [3, 2, 1, 0]
    for _ in range(2):  # the prompts' last tokens, then one answer token each
        batch.step()
        assert [seq for seq, _, _ in written(batch)] == [0, 1, 2, 3]
    assert not failures


def test_a_gap_between_slots_is_filled_with_a_token_removed_after_the_step(direct) -> None:
    """Slots 0 and 2 decode, slot 1 keeps a cached prompt: the step carries a throwaway token for slot 1
    (no logits, at the position after its cache) so it stays one pass, and slot 1's cache is as before."""
    batch, failures = direct
    lib = batch._lib
    cached = lib.llama_memory_seq_pos_max(batch._mem, 1)
    assert cached == 5
    for prompt in (2, 0):
        admit(batch, failures, prompt, 4, (7,))
    batch.step()
    assert written(batch) == [(0, 6, 1), (1, 6, 0), (2, 6, 1)]
    assert lib.llama_memory_seq_pos_max(batch._mem, 1) == cached
    resumed = admit(batch, failures, 1, 2, (7,))  # slot 1's cache still serves its prompt
    assert batch._running[1].request.tokens[-1] == 7 and batch._running[1].fed == 6
    while batch.active:
        batch.step()
    assert resumed.ended and not failures


def test_no_throwaway_token_where_it_saves_no_pass(direct) -> None:
    """Slot 0 prefills 10 prompt tokens, slot 2 decodes one: a token for slot 1 would not save a pass (slot
    0's other tokens need a pass of their own anyway), so the step carries none."""
    batch, failures = direct
    admit(batch, failures, 2, 4, (7,))
    admit(batch, failures, 0, 4, tuple(range(20, 30)))
    batch.step()
    assert [seq for seq, _, _ in written(batch)] == [0] * 10 + [2]
    while batch.active:
        batch.step()
    assert not failures


def test_newcomers_arriving_together_are_prefilled_one_after_another(tmp_path) -> None:
    """With room in ``n_batch`` for every prompt, a newcomer still starts only while the step holds fewer
    than ``PREFILL_START`` prompt tokens: the first answer starts after one prefill, short prompts pack."""
    from slmctl.backends.gguf_batch import PREFILL_START

    path = write_tiny_gguf(tmp_path / "tiny.gguf", TinyGGUFSpec(context_length=2048))
    loaded = LlamaCppBackend().load(path, LoadOptions(num_ctx=1024, num_thread=1, num_batch=512), slots=4)
    batch = loaded.batch(4)

    failures: list[BaseException] = []
    lengths = [PREFILL_START + 8, PREFILL_START + 8, 4, 4]
    try:
        for i, length in enumerate(lengths):
            tokens = tuple(100 + i + k for k in range(length))
            batch.add(GenerateRequest(SamplingOptions(temperature=0, num_predict=8), tokens=tokens),
                      Sink(failures), threading.Event())
        fed = []
        for _ in range(3):
            batch.step()
            fed.append([sequence.fed for sequence in batch._running.values()])
        assert fed == [[lengths[0], 0, 0, 0], [lengths[0], lengths[1], 0, 0], lengths] and not failures
    finally:
        batch.close()
        loaded.close()


def test_greedy_decoding_picks_the_tokens_of_llama_cpps_own_greedy_sampler(tmp_path, model: LlamaCppModel,
                                                                            runner: ThreadRunner) -> None:
    """A greedy request without penalties skips llama.cpp's sampler chain (its highest logit is taken in
    the step); its answer is the one llama-cpp-python's own generation gives, penalties off or on."""
    path = write_tiny_gguf(tmp_path / "tiny.gguf", TinyGGUFSpec(eos_reachable=True, context_length=2048))
    plain = LlamaCppBackend().load(path, LoadOptions(num_ctx=1024, num_thread=1, num_batch=32))
    try:
        for text, options in ((PROMPTS[1], {}), (PROMPTS[3], {}), (PROMPTS[1], {"repeat_penalty": 1.5})):
            batched = runner.submit(request(text, **options))
            assert batched.complete() == plain.generate(request(text, **options)).complete()
            assert batched.stats.eval_count > 4
    finally:
        plain.close()


def test_a_stranger_takes_the_least_recently_used_slot_not_a_cache_it_barely_shares(direct) -> None:
    """Slots 0-3 cache prompts 0-3 (ended in that order). A prompt sharing nothing, or only its first
    token, with them takes the least recently used slot, keeping the other caches; one sharing most of a
    cache still goes back to it, whatever its age."""
    batch, failures = direct
    stranger = (55,) * 12
    admit_tokens = [stranger, (130,) + stranger, tuple(100 + 30 + k for k in range(6)) + (7, 8)]
    for tokens in admit_tokens:
        batch.add(GenerateRequest(SamplingOptions(temperature=0, num_predict=1), tokens=tokens), Sink(failures),
                  threading.Event())
    assert [(s.slot, s.fed) for s in batch._running.values()] == [(0, 0), (1, 0), (3, 6)]
    while batch.active:
        batch.step()
    assert batch._cache[2][:6] == [120 + k for k in range(6)] and not failures


@pytest.fixture(scope="module")
def counted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[object, list[int]]]:
    """A llama.cpp context as a 4-slot batch makes one (a KV stream per sequence, ``n_ubatch`` 16), with a
    counter of the graphs it computes: one per pass over the weights."""
    import ctypes

    import llama_cpp
    from llama_cpp._ggml import libggml

    libggml.ggml_get_name.restype, libggml.ggml_get_name.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
    path = write_tiny_gguf(tmp_path_factory.mktemp("passes") / "tiny.gguf", TinyGGUFSpec(context_length=2048))
    loaded = LlamaCppBackend().load(path, LoadOptions(num_ctx=256, num_thread=1), slots=1)
    graphs = [0]

    @llama_cpp.ggml_backend_sched_eval_callback
    def seen(tensor: int, ask: bool, _: int) -> bool:
        if ask and libggml.ggml_get_name(tensor) == b"attn_norm-0":  # the first layer's first node
            graphs[0] += 1
        return False

    params = llama_cpp.llama_context_default_params()
    params.n_ctx, params.n_seq_max, params.kv_unified = 256 * 4, 4, False
    params.n_batch, params.n_ubatch, params.n_threads, params.n_threads_batch = 64, 16, 1, 1
    params.cb_eval = seen
    ctx = llama_cpp.llama_init_from_model(loaded._llm._model.model, params)
    batch = llama_cpp.llama_batch_init(64, 0, 1)
    try:
        yield (llama_cpp, ctx, batch), graphs
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)
        loaded.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.integers(0, 3), st.integers(1, 16), min_size=1).filter(lambda d: sum(d.values()) <= 64))
def test_passes_counts_the_passes_llama_cpp_makes_over_a_batch(counted, tokens_by_slot: dict[int, int]) -> None:
    """``passes`` (which decides where a throwaway token keeps a step whole) against llama.cpp itself."""
    from slmctl.backends.gguf_batch import passes

    (lib, ctx, batch), graphs = counted
    lib.llama_memory_clear(lib.llama_get_memory(ctx), True)
    n = 0
    for slot in sorted(tokens_by_slot):
        for k in range(tokens_by_slot[slot]):
            batch.token[n], batch.pos[n], batch.n_seq_id[n] = 5, k, 1
            batch.seq_id[n][0], batch.logits[n] = slot, int(k == tokens_by_slot[slot] - 1)
            n += 1
    batch.n_tokens, graphs[0] = n, 0
    assert lib.llama_decode(ctx, batch) == 0
    assert passes(tokens_by_slot, 16) == graphs[0]


@pytest.fixture
def outboxed(model: LlamaCppModel) -> Iterator[tuple[ThreadRunner, Callable[..., object], list[tuple]]]:
    """A batching runner as a runner process drives it: the runner, a sink maker whose messages go through
    the process's :class:`Outbox`, and the messages the parent would have received."""
    from slmctl.engine.runner_process import Outbox, PipeSink

    sent: list[tuple] = []
    outbox = Outbox(sent.append)
    batched = ThreadRunner(model, name="tiny", slots=4, on_step=outbox.flush)
    cancels: dict[int, threading.Event] = {}
    yield batched, lambda ident: PipeSink(outbox.hold, ident, cancels), sent
    batched.close(free_model=False)  # what still runs ends with "the model was unloaded"


def unpack(sent: list[tuple]) -> list[tuple]:
    """The messages a parent received, each step's batch unpacked."""
    return [m for message in list(sent) for m in (message[1] if message[0] == "batch" else [message])]


def test_a_runner_process_sends_what_a_step_produced_as_one_message(outboxed) -> None:
    """In a runner process, the chunks (and ends) that one batch step produced go to the server as one
    message, one write and one wake-up of its event loop per step instead of one per sequence; unpacked,
    every request's messages are its solo answer, in order, then its end."""
    batched, sink, sent = outboxed
    texts = [alone(batched, text) for text in PROMPTS[:3]]
    assert not sent  # a request read in this process is not the outbox's
    for ident, text in enumerate(PROMPTS[:3]):
        batched.start(request(text), sink(ident), threading.Event())
    wait_for(lambda: sum(m[0] == "done" for m in unpack(sent)) == 3, "the three answers", interval=0.005)
    unpacked = unpack(sent)
    for ident, text in enumerate(texts):
        mine = [m for m in unpacked if m[1] == ident]
        assert "".join(m[2] for m in mine[:-1] if m[0] == "chunk") == text
        assert [m[0] for m in mine].count("done") == 1 and mine[-1][0] == "done"
    assert any(m[0] == "batch" and len({each[1] for each in m[1]}) == 3 for m in sent)
    assert len(sent) < len(unpacked)


def test_a_refusal_at_admission_is_not_held_back_until_the_next_step_ends(outboxed) -> None:
    """A request refused when admitted (its prompt overflows the context) hears so at once, in a message of
    its own, not bundled with the chunks of the step that follows (a long prefill step can take seconds)."""
    batched, sink, sent = outboxed
    endless = GenerateRequest(SamplingOptions(temperature=0, num_predict=900), ignore_eos=True,
                              messages=(ChatMessage("user", "hello"),))
    batched.start(endless, sink(1), threading.Event())
    wait_for(lambda: len(sent) >= 3, "the endless answer's first steps", interval=0.005)
    batched.start(request("word " * 3000), sink(2), threading.Event())
    wait_for(lambda: any(m[0] == "error" for m in unpack(sent)), "the refusal", interval=0.005)
    refusal = next(message for message in list(sent) if any(m[0] == "error" for m in unpack([message])))
    assert refusal[0] == "error" and refusal[1] == 2
