"""Grammar-constrained sampling as llama.cpp's own server does it: check the chosen token, not the vocabulary.

Applying a grammar sampler means walking the grammar for every token of the vocabulary (150,000 for
Qwen-sized models) at every step. Most steps do not need it: the token the request's sampler chain picks
from the unconstrained logits is usually one the grammar allows (inside a JSON string, almost any token
is). So :class:`LazyGrammar` samples with the chain first, asks the grammar about that one token, and only
when the grammar refuses it applies the grammar to the whole vocabulary and samples again from what is
left. Greedy decoding picks the same token either way (the best token, or the best allowed one); with
sampling, the token comes from the chain's distribution when the grammar allows it, as in llama-server.

The candidates live in one numpy array of ``llama_token_data`` per sequence, refilled from the logits at
each step; the UTF-8 guard (:mod:`slmctl.backends.utf8_guard`) masks them before the chain sees them. The
grammar and the chain accept the chosen token once, at the end.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

#: The layout of llama.cpp's ``llama_token_data``: id, logit, p.
TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


class LazyGrammar:
    """One sequence's grammar and sampler chain (``chain``: a llama-cpp-python ``LlamaSampler`` without the
    grammar), sampling a step's token from ``llama_get_logits_ith(ctx, index)``."""

    def __init__(self, lib: Any, grammar: Any, chain: Any, n_vocab: int, guard: Any = None) -> None:
        self._lib, self._grammar, self._chain, self._guard = lib, grammar, chain, guard
        self._n = n_vocab
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._candidates = np.zeros(n_vocab, dtype=TOKEN_DATA)
        self._one = np.zeros(1, dtype=TOKEN_DATA)
        self._all = self._array(self._candidates)
        self._single = self._array(self._one)

    def _array(self, data: np.ndarray) -> Any:
        pointer = ctypes.cast(data.ctypes.data, ctypes.POINTER(self._lib.llama_token_data))
        return self._lib.llama_token_data_array(data=pointer, size=len(data), selected=-1, sorted=False)

    #: How many steps needed the grammar over the whole vocabulary (the chain's pick was refused).
    resampled = 0

    def sample(self, ctx: Any, index: int, utf8_state: int | None) -> int:
        """The token of batch row ``index`` (accepted by the grammar and the chain)."""
        return self.sample_logits(np.ctypeslib.as_array(self._lib.llama_get_logits_ith(ctx, index), shape=(self._n,)),
                                  utf8_state)

    def sample_logits(self, logits: np.ndarray, utf8_state: int | None) -> int:
        token = self._pick(logits, utf8_state, constrained=False)
        if not self._allows(token):
            self.resampled += 1
            token = self._pick(logits, utf8_state, constrained=True)
        self._lib.llama_sampler_accept(self._grammar, token)
        self._lib.llama_sampler_accept(self._chain.sampler, token)
        return token

    def _pick(self, logits: np.ndarray, utf8_state: int | None, *, constrained: bool) -> int:
        candidates, array = self._candidates, self._all
        candidates["id"] = self._ids  # the chain sorts and cuts the array in place: start again each time
        candidates["logit"] = logits
        candidates["p"] = 0.0
        if self._guard is not None and utf8_state is not None:
            self._guard.mask(candidates["logit"], utf8_state)  # a field of a structured array is a view
        array.size, array.selected, array.sorted = self._n, -1, False
        if constrained:
            self._lib.llama_sampler_apply(self._grammar, ctypes.byref(array))
        self._lib.llama_sampler_apply(self._chain.sampler, ctypes.byref(array))
        return int(candidates["id"][array.selected])

    def _allows(self, token: int) -> bool:
        self._one[0] = (token, 1.0, 0.0)
        self._single.size, self._single.selected, self._single.sorted = 1, -1, False
        self._lib.llama_sampler_apply(self._grammar, ctypes.byref(self._single))
        return bool(np.isfinite(self._one["logit"][0]))

    def close(self) -> None:
        if self._grammar is not None:
            self._lib.llama_sampler_free(self._grammar)
            self._grammar = None
        self._chain.close()
