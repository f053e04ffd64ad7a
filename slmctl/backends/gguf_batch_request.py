"""What each request brings into a GGUF batch (:mod:`slmctl.backends.gguf_batch`): its own sampler chain,
its JSON-schema grammar and the text stream that turns its tokens into text (stops, limit, scoring).

The batch owns the llama.cpp context and the step; these are built once per request when it is admitted.
"""

from __future__ import annotations

import codecs
import random
from collections.abc import Callable
from typing import Any

from slmctl.backends.base import GenerateRequest, Stats
from slmctl.backends.tokenloop import TextStream, score_token
from slmctl.errors import OperationFailed


def sampler_chain(request: GenerateRequest, n_vocab: int, context: int) -> Any:
    """A sampler chain of the request's own: penalties, then greedy or top-k/typical/top-p/min-p/
    temperature/dist with the request's seed (the order llama-cpp-python uses); a grammar is apart.
    None for greedy decoding without a grammar or a penalty (llama.cpp's penalties are off at
    ``repeat_penalty`` 1 with no frequency or presence penalty, or over no recent tokens): the step then
    takes the highest logit itself, the token llama.cpp's greedy sampler picks (the first one)."""
    from llama_cpp._internals import LlamaSampler

    options = request.options
    last_n = context if options.repeat_last_n < 0 else options.repeat_last_n
    no_penalty = last_n == 0 or (options.repeat_penalty == 1 and options.frequency_penalty == 0
                                 and options.presence_penalty == 0)
    if options.temperature <= 0 and no_penalty and request.json_format is None:
        return None
    chain = LlamaSampler()
    chain.add_penalties(n_vocab, last_n, options.repeat_penalty, options.frequency_penalty,
                        options.presence_penalty)
    if options.temperature <= 0:
        chain.add_greedy()
    else:
        chain.add_top_k(options.top_k)
        chain.add_typical(options.typical_p, 1)
        chain.add_top_p(options.top_p, 1)
        chain.add_min_p(options.min_p, 1)
        chain.add_temp(options.temperature)
        chain.add_dist(options.seed if options.seed >= 0 else random.randrange(2**31))
    return chain


def json_grammar(lib: Any, vocab: Any, n_vocab: int, utf8_guard: Any, request: GenerateRequest,
                 chain: Any) -> Any:
    """The request's JSON-schema grammar, sampled lazily with ``chain`` (None when unconstrained)."""
    if request.json_format is None:
        return None
    from slmctl.backends.lazy_grammar import LazyGrammar
    from slmctl.structured.gbnf import grammar_for

    grammar = lib.llama_sampler_init_grammar(vocab, grammar_for(request.json_format).encode(), b"root")
    if not grammar:
        raise OperationFailed("llama.cpp refused the grammar built from the JSON schema")
    return LazyGrammar(lib, grammar, chain, n_vocab, utf8_guard)


def text_stream(llm: Any, lib: Any, vocab: Any, request: GenerateRequest, limit: int, stats: Stats,
                logits: Callable[[], Any]) -> TextStream:
    """The request's text from its tokens; ``logits()`` gives the row of the token being sampled, read
    only when the request asked for log-probabilities."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    score = None
    if request.logprobs is not None:
        top = request.logprobs

        def score(token: int) -> Any:
            return score_token(logits(), token, top, lambda t: llm.detokenize([t], special=True))

    is_eog = lib.llama_vocab_is_eog
    return TextStream(is_end=lambda t: not request.ignore_eos and is_eog(vocab, t),
                      decode=lambda t: decoder.decode(llm.detokenize([t])),
                      flush=lambda: decoder.decode(b"", final=True), stops=request.options.stop,
                      limit=limit, stats=stats, score=score)
