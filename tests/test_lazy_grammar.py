"""Grammar-constrained sampling checks the chain's pick first and walks the whole vocabulary only when the
grammar refuses it; either way the token is the best one the grammar allows (greedy)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from slmctl.backends.gguf import LlamaCppBackend
from slmctl.backends.lazy_grammar import LazyGrammar
from slmctl.options import LoadOptions

DIGITS = b'root ::= [0-9]+'


@pytest.fixture(scope="module")
def model(tiny_gguf: Path) -> Any:
    loaded = LlamaCppBackend().load(tiny_gguf, LoadOptions(num_ctx=128))
    yield loaded
    loaded.close()


def lazy(model: Any, grammar: bytes = DIGITS) -> LazyGrammar:
    from llama_cpp._internals import LlamaSampler

    lib, vocab = model._llama_cpp, model._llm._model.vocab
    chain = LlamaSampler()
    chain.add_greedy()
    return LazyGrammar(lib, lib.llama_sampler_init_grammar(vocab, grammar, b"root"), chain, model._llm.n_vocab())


def piece(model: Any, text: bytes) -> int:
    return next(t for t in range(model._llm.n_vocab()) if model._llm.detokenize([t], special=True) == text)


def test_an_allowed_pick_is_taken_without_walking_the_vocabulary(model: Any) -> None:
    sampler, one = lazy(model), piece(model, b"1")
    logits = np.zeros(model._llm.n_vocab(), dtype=np.float32)
    logits[one] = 5.0
    assert sampler.sample_logits(logits, None) == one and sampler.resampled == 0
    sampler.close()


def test_a_refused_pick_is_replaced_by_the_best_allowed_token(model: Any) -> None:
    sampler, letter, two = lazy(model), piece(model, b"a"), piece(model, b"2")
    logits = np.zeros(model._llm.n_vocab(), dtype=np.float32)
    logits[letter], logits[two] = 9.0, 3.0  # the best token is a letter; the best digit is "2"
    assert sampler.sample_logits(logits, None) == two and sampler.resampled == 1
    logits[letter] = -1.0  # the grammar moved on (one digit accepted): digits are still allowed
    assert sampler.sample_logits(logits, None) == two and sampler.resampled == 1
    sampler.close()
