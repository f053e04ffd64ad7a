"""Continuous batching for GGUF models: several generations decoded together on one llama.cpp context.

One ``llama_context`` with ``n_seq_max`` = slots and ``slots x context`` KV cells, one stream of
``context`` cells per sequence (``kv_unified`` off), so every sequence may use the model's whole context
and a token attends over its own sequence's cells only (a unified pool made every token's attention
span all the sequences' cells: 8 streams decoded ~18 % slower). Each :meth:`GgufBatch.step` builds one
``llama_batch``: the pending token of every generating sequence first, then prompt chunks of newly
admitted ones within what is left of ``n_batch`` (a long prompt is prefilled over several steps, so a
newcomer delays the others' next token by at most one ``n_batch`` chunk; newcomers that arrive together
start a few at a time, see :data:`PREFILL_START`), written in slot order with a throwaway token in a
short gap between slots (llama.cpp decodes a run of consecutive sequence ids in one pass over the
weights, see ``_fillers``), then ``llama_decode`` once and one sample per sequence from its own
sampler chain (its options and seed; a grammar checks the chosen token, see ``lazy_grammar``; what
each request brings is built in ``gguf_batch_request``).
A finished or cancelled sequence frees its slot at once; its KV entries stay as a cache, and a later
prompt that starts the same way (a system prompt, a chat history plus one message) reuses them
(``prompt_cached_count``); a prompt that shares next to nothing with any cache takes the least recently
used slot, so it does not throw away a conversation that its user may continue (see ``_pick_slot``).
One thread drives a batch (the runner's worker); no llama.cpp call here happens on any other.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slmctl.backends.base import Batch, GenerateRequest, Sink, Stats
from slmctl.backends.gguf_batch_request import json_grammar, sampler_chain, text_stream
from slmctl.backends.tokenloop import TextStream
from slmctl.errors import ContextOverflow, OperationFailed

#: A newly admitted prompt starts its prefill in a step only while that step holds fewer prompt tokens
#: than this: newcomers that arrive together are prefilled a few at a time (short prompts packed up to
#: about this many tokens, a long one alone, in its n_batch chunks), so the first answers of a burst start
#: after a part of its prefill, not all of it, while prompt batches stay large enough to run efficiently
#: (one 512-token prefill costs ~8 % less per token here than eight of 64, two of 64 ~2 % less). Measured
#: through serve against llama-server (which packs every prompt that fits in n_batch), 4 / 8 clients of
#: 64-token prompts, medians of paired rounds: at 32, aggregate 0.98 / 0.96x and TTFT p50 0.73 / 0.36x;
#: at 128, 0.99 / 0.97x and 0.86 / 0.64x; at 256, 0.99 / 0.98x but TTFT 0.99-1.25 / 0.81-0.88x; packing
#: all (512), 0.98 / 0.98x and 1.33 / 1.05x (requests reach the runner some ms apart, so a burst's first
#: prompt has a step of its own, and the rest wait for it and then for each other).
PREFILL_START = 128

#: Throwaway tokens worth spending to save one pass over the weights in a step (see ``_fillers``).
FILL_PER_PASS = 2

#: A free slot's cache serves a prompt only when they share more than this fraction of the prompt (as
#: llama-server's ``--slot-prompt-similarity``): a few tokens in common (a BOS, a chat template's first
#: tokens) save next to nothing, while taking that slot throws away the rest of its cache.
REUSE_SHARE = 0.1


@dataclass
class _Sequence:
    slot: int
    request: GenerateRequest
    sink: Sink
    cancel: threading.Event
    prompt: list[int]
    stream: TextStream
    #: The request's llama.cpp sampler chain; None for greedy decoding with nothing to penalize, which takes
    #: the highest logit itself (llama.cpp's sampling copies every logit first: ~0.1 ms a token here).
    sampler: Any
    #: The tokens whose KV entries this sequence holds (prompt first, then the decoded answer).
    cached: list[int] = field(default_factory=list)
    fed: int = 0
    pending: int | None = None
    #: Whether its prompt's prefill has begun (it then goes on in every step until done).
    started: bool = False
    index: int = -1  # this step's batch index to sample from (-1: none)
    #: The UTF-8 decoder state of a constrained answer (None: unconstrained, nothing to keep valid).
    utf8: int | None = None
    #: The grammar of a constrained answer, with the sampler chain (see ``lazy_grammar``).
    grammar: Any = None


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def passes(tokens_by_slot: dict[int, int], n_ubatch: int) -> int:
    """How many passes over the weights llama.cpp makes to decode a batch holding ``tokens_by_slot[s]``
    tokens of sequence ``s``, written in slot order, with a KV stream per sequence: it splits the batch
    (``split_equal``, sequential) into micro-batches of one run of consecutive sequence ids, as many tokens
    of each as the one with fewest left has (and ``n_ubatch`` allows), until every token is decoded."""
    left = dict(sorted(tokens_by_slot.items()))
    count = 0
    while any(left.values()):
        run: list[int] = []
        for slot, n in left.items():
            if not n:
                continue
            if run and slot != run[-1] + 1:
                break
            run.append(slot)
        take = min(min(left[slot] for slot in run), max(1, n_ubatch // len(run)))
        for slot in run:
            left[slot] -= take
        count += 1
    return count


class GgufBatch(Batch):
    """Up to ``slots`` generations of one :class:`~slmctl.backends.gguf.LlamaCppModel`, decoded together."""

    def __init__(self, model: Any, slots: int) -> None:
        import ctypes

        llama_cpp = model._llama_cpp
        self._lib, self._model, self.slots = llama_cpp, model, slots
        llm = model._llm
        self._context = model.info.context_length
        params = llama_cpp.llama_context_params()
        ctypes.memmove(ctypes.byref(params), ctypes.byref(llm.context_params), ctypes.sizeof(params))
        params.n_ctx = self._context * slots
        params.n_seq_max = slots
        params.kv_unified = False  # a KV stream per sequence: see the module docstring
        params.embeddings = False
        params.n_batch = params.n_ubatch = self._n_batch = max(1, model.num_batch)
        self._ctx = llama_cpp.llama_init_from_model(llm._model.model, params)
        if not self._ctx:
            raise OperationFailed(f"llama.cpp could not make a context for {slots} parallel sequences",
                                  "lower --parallel or num_ctx (the KV cache holds parallel x num_ctx tokens)")
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(self._n_batch, 0, 1)
        self._vocab = llm._model.vocab
        self._filler_token = max(0, llama_cpp.llama_vocab_bos(self._vocab))
        self._n_vocab = llm.n_vocab()
        self._cache: dict[int, list[int]] = {slot: [] for slot in range(slots)}
        #: When each slot's last sequence ended (a rising count; 0: never).
        self._used: dict[int, int] = dict.fromkeys(range(slots), 0)
        self._clock = itertools.count(1)
        self._running: dict[int, _Sequence] = {}
        self._scoring = -1  # the batch index of the token being sampled (read by log-probability scoring)
        self._closed = False
        self._warm_up()

    def _warm_up(self) -> None:
        """Decode a few tokens once, as llama-server does at start: llama.cpp's first decodes on a new
        context set up its compute graphs (hundreds of ms on a CPU), which the first request would pay."""
        batch, bos = self._batch, self._lib.llama_vocab_bos(self._vocab)
        for size in (min(8, self._n_batch), 1):
            for i in range(size):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = max(bos, 0), i, 1
                batch.seq_id[i][0], batch.logits[i] = 0, int(i == size - 1)
            batch.n_tokens = size
            self._lib.llama_decode(self._ctx, batch)
            self._lib.llama_memory_clear(self._mem, True)

    # -- admission -------------------------------------------------------------------------------
    @property
    def active(self) -> int:
        return len(self._running)

    def free_slots(self) -> int:
        return self.slots - len(self._running)

    def add(self, request: GenerateRequest, sink: Sink, cancel: threading.Event) -> None:
        """Admit ``request`` into a free slot (raises when none is free, or when the prompt does not fit;
        nothing is then delivered to ``sink``)."""
        if not self.free_slots():
            raise OperationFailed("no free slot in the batch")
        prompt = self._model.prompt_tokens(request)
        if len(prompt) >= self._context:
            raise ContextOverflow(f"the prompt is {len(prompt)} tokens but the context holds {self._context}",
                                  "shorten the prompt or raise the context: --param num_ctx=N")
        options = request.options
        room = self._context - len(prompt)
        limit = min(options.num_predict, room) if options.num_predict >= 0 else room
        slot, reused = self._pick_slot(prompt)
        self._lib.llama_memory_seq_rm(self._mem, slot, reused, -1)
        stats = Stats(prompt_eval_count=len(prompt), prompt_cached_count=reused)
        chain = sampler_chain(request, self._n_vocab, self._context)
        try:
            grammar = json_grammar(self._lib, self._vocab, self._n_vocab, self._model.utf8_guard(), request, chain)
        except BaseException:
            if chain is not None:
                chain.close()
            raise
        stream = text_stream(self._model._llm, self._lib, self._vocab, request, limit, stats,
                             lambda: self._logits(self._scoring))
        sequence = _Sequence(slot, request, sink, cancel, prompt, stream, chain, cached=prompt[:reused], fed=reused,
                             utf8=0 if grammar is not None else None, grammar=grammar)
        self._running[slot] = sequence
        if sequence.stream.finished:  # num_predict 0
            self._finish(sequence)

    def _pick_slot(self, prompt: list[int]) -> tuple[int, int]:
        """The free slot for ``prompt``, and how many of its cached tokens to keep (at least the prompt's
        last token is decoded again, for its logits): the one sharing the longest prefix with it, of those
        sharing more than :data:`REUSE_SHARE` of it (ties: the least recently used); else the least recently
        used slot, an empty one first. Every prompt shares a few first tokens with every cache, and taking
        a slot for those would throw away, say, a chat history whose next turn comes a moment later."""
        free = [s for s in range(self.slots) if s not in self._running]
        shared = {s: min(common_prefix(self._cache[s], prompt), len(prompt) - 1) for s in free}
        worth = [s for s in free if shared[s] > REUSE_SHARE * len(prompt)]
        if worth:
            best = max(worth, key=lambda s: (shared[s], -self._used[s]))
        else:
            best = min(free, key=lambda s: (bool(self._cache[s]), self._used[s]))
        return best, shared[best]

    # -- decoding --------------------------------------------------------------------------------
    def step(self) -> None:
        """Decode one step for every running sequence; deliver what each produced."""
        for sequence in [s for s in self._running.values() if s.cancel.is_set()]:
            self._finish(sequence)
        if not self._running:
            return
        batch, n = self._batch, 0

        def put(token: int, position: int, slot: int, logits: bool) -> None:
            nonlocal n
            batch.token[n], batch.pos[n], batch.n_seq_id[n] = token, position, 1
            batch.seq_id[n][0], batch.logits[n] = slot, int(logits)
            n += 1

        feeds = self._feeds()
        fillers = self._fillers(feeds)
        for slot in sorted([*feeds, *fillers]):  # slot order: see _fillers
            if slot in fillers:
                put(self._filler_token, fillers[slot], slot, False)
                continue
            sequence = self._running[slot]
            if sequence.pending is not None:
                sequence.index = n
                put(sequence.pending, len(sequence.cached), slot, True)
                sequence.cached.append(sequence.pending)
                sequence.pending = None
            else:
                take = feeds[slot]
                for k in range(sequence.fed, sequence.fed + take):
                    put(sequence.prompt[k], k, slot, k == len(sequence.prompt) - 1)
                sequence.cached.extend(sequence.prompt[sequence.fed:sequence.fed + take])
                sequence.fed += take
                if sequence.fed == len(sequence.prompt):
                    sequence.index = n - 1
        batch.n_tokens = n
        code = self._lib.llama_decode(self._ctx, batch)
        for slot, position in fillers.items():
            self._lib.llama_memory_seq_rm(self._mem, slot, position, -1)
        if code != 0:
            error = OperationFailed(f"llama.cpp could not decode the batch (llama_decode returned {code})",
                                    "lower --parallel or num_ctx")
            for sequence in list(self._running.values()):
                self._finish(sequence, error)
            return
        for sequence in list(self._running.values()):
            if sequence.index >= 0:
                self._sample(sequence)

    def _feeds(self) -> dict[int, int]:
        """How many tokens each sequence feeds this step, by slot: its pending token (every generating
        sequence), or a chunk of its prompt within what is left of ``n_batch`` (prefills in admission
        order; a newcomer starts only while the step holds fewer than PREFILL_START prompt tokens)."""
        feeds = {s.slot: 1 for s in self._running.values() if s.pending is not None}
        room, prefill = self._n_batch - len(feeds), 0
        for sequence in self._running.values():
            sequence.index = -1
            if sequence.pending is None and room > 0 and (sequence.started or prefill < PREFILL_START):
                sequence.started = True
                feeds[sequence.slot] = take = min(room, len(sequence.prompt) - sequence.fed)
                room -= take
                prefill += take
        return feeds

    def _fillers(self, feeds: dict[int, int]) -> dict[int, int]:
        """The slots between fed ones to fill with a throwaway token this step, and its position.

        With a KV stream per sequence, llama.cpp splits a batch into micro-batches of sequences whose ids
        rise by one in batch order, each a full pass over the weights. So the batch is written in slot
        order (in admission order, 8 decoding sequences took 120-126 ms a step instead of 75), and a slot
        without a token this step (free, or a newcomer waiting to start its prefill) would split it in
        two: a token that is decoded and removed again keeps it whole. A pass costs over three tokens'
        decoding on a CPU without llama.cpp's repacked weights (1 sequence 28 ms a step, 8 sequences 77
        ms), so a pass saved is worth up to :data:`FILL_PER_PASS` such tokens; a wider gap (or one without
        room left in ``n_batch``) is left to split the batch. With repacked weights (AVX-512 here), whose
        kernels take rows four at a time, a pass costs less and rows more: slots 0/2/4/6 decode in 57 ms
        filled instead of 62, seven of eight slots in 72 instead of 76, but slots 0 and 2 alone in 34
        instead of 32 (the one case found where the throwaway token costs more than the pass it saves)."""
        fed = sorted(feeds)
        if len(fed) < 2:
            return {}
        gaps = [slot for slot in range(fed[0], fed[-1] + 1) if slot not in feeds]
        if not gaps or sum(feeds.values()) + len(gaps) > self._n_batch:
            return {}
        saved = passes(feeds, self._n_batch) - passes({**feeds, **dict.fromkeys(gaps, 1)}, self._n_batch)
        if len(gaps) > FILL_PER_PASS * saved:  # e.g. no pass saved: a prompt chunk has passes of its own
            return {}
        return {slot: len(self._running[slot].cached) if slot in self._running else len(self._cache[slot])
                for slot in gaps}

    def _logits(self, index: int) -> Any:
        """The logits of this step's batch index ``index`` (a view of llama.cpp's buffer)."""
        return np.ctypeslib.as_array(self._lib.llama_get_logits_ith(self._ctx, index), shape=(self._n_vocab,))

    def _sample(self, sequence: _Sequence) -> None:
        self._scoring = sequence.index
        if sequence.sampler is None:
            token = int(np.argmax(self._logits(sequence.index)))
        elif sequence.grammar is None:
            token = self._lib.llama_sampler_sample(sequence.sampler.sampler, self._ctx, sequence.index)
        else:  # the grammar alone lets invalid UTF-8 through: the guard masks what would break it
            token = sequence.grammar.sample(self._ctx, sequence.index, sequence.utf8)
            sequence.utf8 = self._model.utf8_guard().advance(sequence.utf8, token)
        try:
            text = sequence.stream.accept(token)
        except BaseException as error:  # noqa: BLE001 - a scoring or decoding failure ends this sequence
            self._finish(sequence, error)
            return
        if text:
            sequence.sink.chunk(text)
        if sequence.stream.finished:
            self._finish(sequence)
        else:
            sequence.pending = token

    def _finish(self, sequence: _Sequence, error: BaseException | None = None) -> None:
        del self._running[sequence.slot]
        self._cache[sequence.slot] = sequence.cached
        self._used[sequence.slot] = next(self._clock)
        if sequence.grammar is not None:
            sequence.grammar.close()  # with its chain
        elif sequence.sampler is not None:
            sequence.sampler.close()
        if error is not None:
            self._lib.llama_memory_seq_rm(self._mem, sequence.slot, -1, -1)
            self._cache[sequence.slot] = []
            sequence.sink.fail(error)
            return
        rest = sequence.stream.finish()
        if rest:
            sequence.sink.chunk(rest)
        if sequence.cancel.is_set():
            sequence.stream.stats.done_reason = "cancel"
        sequence.sink.done(sequence.stream.stats)

    def fail_all(self, error: BaseException) -> None:
        for sequence in list(self._running.values()):
            self._finish(sequence, error)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.fail_all(OperationFailed("the model was unloaded"))
        self._lib.llama_batch_free(self._batch)
        self._lib.llama_free(self._ctx)
