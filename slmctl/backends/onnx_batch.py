"""Batched generation of ONNX models on onnxruntime-genai's ``og.Engine``.

Owns :class:`OnnxEngineBatch`: several generations of one :class:`~slmctl.backends.onnx.OnnxGenaiModel`
decoded together. Each generation is an Engine ``Request`` with one turn whose ``TurnOptions`` carry
what the classic path's search options carry (greedy or temperature/top-k/top-p sampling, repetition
penalty, the token limit, ``min`` tokens for ``ignore_eos``, JSON guidance); every :meth:`~OnnxEngineBatch.step`
is one ``engine.run``, whose events feed each generation's :class:`~slmctl.backends.tokenloop.TextStream`
(stop strings are matched on the text, since the Engine's static path refuses them) and sink.

Without PagedAttention (CPU) the Engine runs *static* batches: a request begun while a batch runs
waits until every row of that batch has ended. So this batch admits generations only until its Engine
batch starts (``free_slots`` is 0 from then until the batch has drained). Concurrent clients send their
next requests when their answers end, so after a drain they come back some milliseconds apart (tens
through HTTP), and one that misses the next batch waits a whole batch. So a new batch waits up to
``gather_s`` after its first generation, until it holds as many rows as are expected: the clients of
the batch that just drained, plus the requests that queued while it ran (the runner admits those at
once). A lone client, whose batches hold one row, never waits.

A PagedAttention model (``engine.dynamic_batching`` in its ``genai_config.json``: CUDA or WebGPU in 16
bits; none runs on the CPU) takes the Engine's *dynamic* path instead, which batches continuously (and
caches prompt prefixes): generations are admitted whenever fewer than ``slots`` run, and each
``engine.run`` schedules whatever can progress; nothing waits for a drain or gathers.

What the static Engine cannot do runs on the classic path inside the batch, one chunk per step, on the
same thread: log-probabilities (the Engine exposes no logits) and seeded sampling (it refuses per-turn
seeds). The Engine enforces its owner thread, so it is made by the first call that needs it (on the
thread that drives the batch: the runner's worker), never by the constructor.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from slmctl.backends.base import Batch, GenerateRequest, Generation, Sink, Stats
from slmctl.backends.tokenloop import TextStream
from slmctl.errors import OperationFailed

#: How long a new batch waits for the rows it expects (see above) before it starts without them.
GATHER_S = 0.1


@dataclass
class _Row:
    """One generation on the Engine. ``sink`` is None once its end was delivered (the Engine turn may
    still be winding down: a stop string or a cancel ends the text before the Engine ends the turn)."""

    sink: Sink | None
    cancel: threading.Event
    request: GenerateRequest
    limit: int
    stream: TextStream
    handle: Any  # og.Request
    turn: int
    turn_done: bool = False


@dataclass
class _Solo:
    """One generation on the classic path (what the static Engine cannot serve)."""

    sink: Sink
    generation: Generation
    chunks: Iterator[str]


class OnnxEngineBatch(Batch):
    """Up to ``slots`` generations of one ONNX GenAI model decoded together by ``og.Engine``."""

    def __init__(self, model: Any, slots: int, *, gather_s: float = GATHER_S, continuous: bool = False) -> None:
        self._model, self.slots, self._gather = model, slots, gather_s
        #: The Engine's dynamic path (continuous batching), else static batches (see the module docstring).
        self.continuous = continuous
        self._og = model._og
        self._engine: Any = None
        self._buffer: Any = None
        self._capacity = slots
        self._rows: dict[Any, _Row] = {}  # by og.Request (an event's ``request`` aliases the handle)
        self._solos: list[_Solo] = []
        self._started = False  # the Engine batch runs: nothing joins it until it has drained
        self._ran = 0  # rows of the batch that runs (or ran last)
        self._first_add = 0.0
        self._expected = 0  # rows the next batch waits for (see the module's docstring)
        self._queued = False  # a request waited while the batch ran
        self._admitting_queued = False  # the batch drained: the runner is adding what waited
        self._closed = False

    def _get_engine(self) -> Any:
        if self._engine is None:
            try:
                self._engine = self._og.Engine(self._model._model)
            except RuntimeError as exc:
                raise OperationFailed(f"onnxruntime-genai could not start its batching engine: {exc}") from exc
            capacity = int(self._engine.get_capabilities().configured_max_batch_size or self.slots)
            self._capacity = max(1, min(self.slots, capacity))
            self._buffer = self._engine.create_event_buffer(2 * self._capacity + 8)
        return self._engine

    # -- admission -------------------------------------------------------------------------------
    @property
    def active(self) -> int:
        return len(self._rows) + len(self._solos)

    def free_slots(self) -> int:
        if self._started:  # never on the dynamic path
            self._queued = True  # the runner asks only when a request waits
        if self._closed or self._started:
            return 0
        self._get_engine()
        return max(0, self._capacity - len(self._rows) - len(self._solos))

    def add(self, request: GenerateRequest, sink: Sink, cancel: threading.Event) -> None:
        """Start ``request`` (raises, delivering nothing, when it cannot: no free slot, an empty prompt
        or one over the context, options the runtime refuses)."""
        if not self.free_slots():
            raise OperationFailed("no free slot in the batch")
        options = request.options
        prompt, limit = self._model.prompt_and_limit(request)  # raises here on a prompt it cannot take
        if request.logprobs is not None or (options.temperature > 0 and options.seed >= 0):
            generation = self._model.generate(request, cancel)
            self._solos.append(_Solo(sink, generation, iter(generation)))
            return
        stats = Stats(prompt_eval_count=len(prompt))
        stream = self._text_stream(request, limit, stats)
        if stream.finished:  # num_predict 0: nothing to run
            stream.finish()
            sink.done(stats)
            return
        import numpy as np

        engine = self._get_engine()
        handle = engine.create_request()
        try:
            turn = handle.begin_turn(np.asarray(prompt, dtype=np.int32), self._turn_options(handle, request, limit))
        except RuntimeError as exc:
            handle.close()
            raise OperationFailed(f"onnxruntime-genai could not start the generation: {exc}") from exc
        if not self._rows:
            self._first_add = time.monotonic()
        if self._admitting_queued:
            self._expected += 1  # a client of its own, besides those of the batch that drained
        self._rows[handle] = _Row(sink, cancel, request, limit, stream, handle, turn)

    def _turn_options(self, handle: Any, request: GenerateRequest, limit: int) -> Any:
        """The classic path's search options (``OnnxGenaiModel._params``) as this turn's options."""
        options, turn = request.options, self._og.TurnOptions(handle)
        turn.set_max_generated_tokens(limit)
        if request.ignore_eos:
            turn.set_min_generated_tokens(limit)  # the runtime then never ends on an EOS token
        turn.set_do_sample(options.temperature > 0)
        if options.temperature > 0:
            turn.set_temperature(options.temperature)
            turn.set_top_k(options.top_k or 0)
            turn.set_top_p(options.top_p)
        if options.repeat_penalty > 0:
            turn.set_repetition_penalty(options.repeat_penalty)
        schema = self._model.json_guidance(request.json_format)
        if schema is not None:
            turn.set_guidance("json_schema", schema)
        return turn

    def _text_stream(self, request: GenerateRequest, limit: int, stats: Stats) -> TextStream:
        decoder, eos = self._model._tokenizer.create_stream(), self._model._eos
        return TextStream(is_end=lambda t: not request.ignore_eos and t in eos, decode=decoder.decode,
                          flush=lambda: "", stops=request.options.stop, limit=limit, stats=stats)

    # -- decoding --------------------------------------------------------------------------------
    def step(self) -> None:
        """Advance the classic-path generations by a chunk and the Engine batch by one ``run``."""
        for row in [r for r in self._rows.values() if r.sink is not None and r.cancel.is_set()]:
            self._end(row)
        for solo in list(self._solos):
            self._step_solo(solo)
        if not self._rows:
            return
        if not self._started and not self.continuous:
            self._admitting_queued = False
            live = any(r.sink is not None for r in self._rows.values())
            if live and len(self._rows) < min(self._expected, self._capacity) \
                    and time.monotonic() - self._first_add < self._gather:
                time.sleep(0.001)  # the runner admits newcomers meanwhile
                return
            self._started, self._ran = True, len(self._rows)
            for row in self._rows.values():  # its prompt evaluation starts now, not when it was added
                if row.sink is not None:
                    row.stream = self._text_stream(row.request, row.limit, row.stream.stats)
        flags, reasons = self._og.EngineEventFlags, self._og.FinishReason
        try:
            events = self._engine.run(self._buffer)
        except RuntimeError as exc:  # the runner then ends every generation (fail_all)
            raise OperationFailed(f"onnxruntime-genai failed to run the batch: {exc}") from exc
        for event in events:
            row = self._rows.get(event.request)
            if row is None:
                continue
            finished = bool(event.flags & flags.TURN_FINISHED)
            row.turn_done = row.turn_done or finished
            if finished and event.usage is not None:  # the dynamic path's prefix cache counts its hits here
                row.stream.stats.prompt_cached_count = int(event.usage.cached_prompt_tokens)
            if event.flags & flags.FAILED or (finished and event.finish_reason == reasons.FAILED):
                if row.sink is not None:
                    self._end(row, OperationFailed(f"onnxruntime-genai failed the generation ({event.error_code})"))
            elif event.flags & flags.TOKEN and row.sink is not None:
                self._accept(row, int(event.token))
            if finished:
                if row.sink is not None:
                    if event.finish_reason in (reasons.EOS, reasons.STOP_STRING):
                        row.stream.stats.done_reason = "stop"
                    self._end(row)
                self._close(row)
        if not self._engine.has_pending_requests():  # nothing left to report an end: none will come
            for row in list(self._rows.values()):
                if row.sink is not None:
                    self._end(row, OperationFailed("onnxruntime-genai dropped the generation"))
                self._close(row)

    def _accept(self, row: _Row, token: int) -> None:
        try:
            text = row.stream.accept(token)
        except BaseException as error:  # noqa: BLE001 - a decoding failure ends this generation
            self._end(row, error)
            return
        if text and row.sink is not None:
            row.sink.chunk(text)
        if row.stream.finished:
            self._end(row)

    def _step_solo(self, solo: _Solo) -> None:
        try:
            chunk = next(solo.chunks)
        except StopIteration:
            self._solos.remove(solo)
            solo.sink.done(solo.generation.stats or Stats())
        except BaseException as error:  # noqa: BLE001 - this generation's failure, told to its reader
            self._solos.remove(solo)
            solo.sink.fail(error)
        else:
            solo.sink.chunk(chunk)

    def _end(self, row: _Row, error: BaseException | None = None) -> None:
        """Deliver the end of ``row``'s generation (once); a turn still running is cancelled, and its
        request closed when the Engine reports the turn's end."""
        sink, row.sink = row.sink, None
        if not row.turn_done:
            try:
                row.handle.cancel_turn(row.turn)
            except RuntimeError:
                pass
        if sink is None:
            return
        if error is not None:
            sink.fail(error)
            return
        rest = row.stream.finish()
        if rest:
            sink.chunk(rest)
        if row.cancel.is_set():
            row.stream.stats.done_reason = "cancel"
        sink.done(row.stream.stats)

    def _close(self, row: _Row) -> None:
        if self._rows.pop(row.handle, None) is None:
            return
        try:
            row.handle.close()
        except RuntimeError:
            pass
        if not self._rows and self._started:  # drained: its clients will be back, with what queued
            self._started, self._expected = False, self._ran
            self._admitting_queued, self._queued = self._queued, False

    def fail_all(self, error: BaseException) -> None:
        for row in list(self._rows.values()):
            if row.sink is not None:
                row.turn_done = True  # the Engine may be unusable: do not touch the turn
                self._end(row, error)
            self._close(row)
        for solo in list(self._solos):
            self._solos.remove(solo)
            solo.generation.close()
            solo.sink.fail(error)
        self._engine = self._buffer = None  # a failed run may leave the Engine unhealthy: start afresh
        self._started = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.fail_all(OperationFailed("the model was unloaded"))
