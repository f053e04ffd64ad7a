"""The GGUF backend on llama-cpp-python.

Owns everything llama.cpp-specific: load-time arguments, the chat template from the GGUF metadata,
the token loop (sampling options, seed, stop strings, num_predict, JSON grammar, cancellation,
timings), tokenization and embeddings. ``llama_cpp`` is imported only when a model is loaded.
A ``Llama`` instance crashes when two threads use it at once, so every call holds the model's lock.
"""

from __future__ import annotations

import codecs
import os
import random
import threading
import time
from contextlib import nullcontext
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from slmctl.backends import llama_log
from slmctl.backends.cpu_buffers import extra_buffers_work_here, without_extra_buffers
from slmctl.backends.base import (
    Backend,
    ChatMessage,
    GenerateRequest,
    Generation,
    known_token_ids,
    LoadedInfo,
    LoadedModel,
    Stats,
    TokenLogprob,
    fallback_prompt,
)
from slmctl.backends.tokenloop import score_token, stream_text
from slmctl.errors import ContextOverflow, DeviceUnavailable, InvalidModelFile, OperationFailed
from slmctl.options import LLAMA_CPP_NAMES, LoadOptions, SamplingOptions, capped_context

#: The context of a ``Llama`` whose generations run in a batch (it only tokenizes; llama.cpp's minimum).
_BATCHED_OWN_CONTEXT = 256
_SAMPLING_KEYS = ("temperature", "top_k", "top_p", "min_p", "typical_p", "repeat_penalty",
                  "presence_penalty", "frequency_penalty")


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:  # pragma: no cover - a broken install
        raise DeviceUnavailable(  # the same error (and exit code) as the ONNX backend's
            f"the GGUF backend is not usable: cannot import llama_cpp ({exc})",
            "reinstall it: pip install --force-reinstall llama-cpp-python",
        ) from exc
    llama_log.install(llama_cpp)
    return llama_cpp


def physical_cores() -> int:
    """Physical CPU cores (Ollama's default thread count)."""
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def sampling_kwargs(options: SamplingOptions) -> dict[str, Any]:
    """Our sampling options under llama-cpp-python's argument names (the table in options.py)."""
    return {LLAMA_CPP_NAMES[key]: getattr(options, key) for key in _SAMPLING_KEYS}


class LlamaCppBackend(Backend):
    """Loads GGUF files with llama.cpp (CPU, CUDA, Metal, Vulkan... whatever the build supports)."""

    name = "llama.cpp"
    format = "gguf"

    def devices(self) -> list[str]:
        from slmctl.backends.probes import usable_gguf_devices

        return usable_gguf_devices()

    def load(self, path: Path, options: LoadOptions, *, device: str = "cpu", embedding: bool = False,
             provider_options: Mapping[str, str] | None = None, adapters: Sequence[Path] = (),
             slots: int | None = None) -> LlamaCppModel:
        llama_cpp = _import_llama_cpp()
        gpu = device != "cpu" and bool(llama_cpp.llama_supports_gpu_offload())
        threads = options.num_thread or physical_cores()
        batched = bool(slots) and not embedding  # generation runs on the batch's own context
        kwargs: dict[str, Any] = {
            "model_path": str(path),
            "n_ctx": _BATCHED_OWN_CONTEXT if batched else options.num_ctx,
            "n_batch": options.num_batch,
            "n_ubatch": options.num_batch,
            "n_gpu_layers": options.num_gpu if gpu else 0,
            "main_gpu": options.main_gpu,
            "n_threads": threads,
            "n_threads_batch": max(threads, os.cpu_count() or 1),
            "use_mmap": options.use_mmap,
            "flash_attn": options.flash_attn,
            "embedding": embedding,
            "verbose": False,
        }
        if embedding:
            kwargs["pooling_type"] = llama_cpp.LLAMA_POOLING_TYPE_MEAN
        if len(adapters) > 1:
            raise InvalidModelFile("llama-cpp-python applies one LoRA adapter per model", "keep one ADAPTER line")
        if adapters:
            kwargs["lora_path"] = str(adapters[0])
        position = llama_log.mark()
        start = time.perf_counter_ns()
        try:
            with nullcontext() if extra_buffers_work_here() else without_extra_buffers():
                llm = llama_cpp.Llama(**kwargs)
        except (ValueError, RuntimeError) as exc:
            raise self._load_error(path, exc, llama_log.since(position)) from exc
        load_ns = time.perf_counter_ns() - start
        device = device if gpu and options.num_gpu != 0 else "cpu"
        template = llm.metadata.get("tokenizer.chat_template")
        # llama.cpp pads its context (to 256 tokens) but llama-cpp-python's token buffers hold what was
        # asked for: the smaller of the two is what a prompt plus its answer may use.
        usable = capped_context(options.num_ctx, llm.n_ctx())
        if batched:  # the context the batch gives each sequence: what was asked, within what the model knows
            usable = capped_context(options.num_ctx, llm._model.n_ctx_train())
        info = LoadedInfo("gguf", device, usable, load_ns, template)
        return LlamaCppModel(llm, info, llama_cpp, batched=batched, num_batch=options.num_batch)

    @staticmethod
    def _load_error(path: Path, exc: Exception, log: list[tuple[int, str]]) -> OperationFailed:
        errors = llama_log.errors_in(log)
        reason = "; ".join(errors[-3:]) if errors else str(exc)
        details = "llama.cpp log:\n" + "".join(text for _, text in log)
        if "does not exist" in str(exc):
            return OperationFailed(f"model file missing: {path}", "run 'slmctl verify' or re-import the model")
        cls = OperationFailed
        hint = "the file may need a newer llama.cpp, or more memory; run with --debug for llama.cpp's log"
        if any(word in reason for word in ("unknown model architecture", "key not found", "corrupted", "invalid")):
            cls = InvalidModelFile
            hint = "the GGUF file is incomplete or not supported by this llama.cpp; run with --debug for its log"
        return cls(f"llama.cpp refused {path.name}: {reason}", hint, details=details)


class LlamaCppModel(LoadedModel):
    """One ``Llama`` instance, serialised by a lock."""

    def __init__(self, llm: Any, info: LoadedInfo, llama_cpp: Any, *, batched: bool = False,
                 num_batch: int = 512) -> None:
        #: Loaded for :meth:`batch` only: its own context is too small to generate on.
        self._batched = batched
        #: Tokens one decode step may take (a batch's per-step budget).
        self.num_batch = num_batch
        self._llm = llm
        self._llama_cpp = llama_cpp
        self._lock = threading.Lock()
        self._formatter: Any = None
        self._guard: Any = None
        self.info = info

    # -- prompt --------------------------------------------------------------------------------
    def _chat_prompt(self, messages: tuple[ChatMessage, ...],
                     tools: tuple[dict[str, Any], ...] | None = None) -> tuple[str, bool]:
        """Render chat messages (and the tools offered) with the GGUF's template. Returns (prompt,
        template_added_bos)."""
        if self.info.chat_template is None:
            return fallback_prompt(messages), False
        if self._formatter is None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            model = self._llm._model
            eos = model.token_get_text(model.token_eos()) if model.token_eos() >= 0 else ""
            bos = model.token_get_text(model.token_bos()) if model.token_bos() >= 0 else ""
            self._formatter = Jinja2ChatFormatter(self.info.chat_template, eos_token=eos, bos_token=bos)
        try:
            result = self._formatter(messages=[m.template_dict() for m in messages],
                                     tools=list(tools) if tools else None)
        except Exception as exc:  # jinja2 errors from a model's own template
            raise OperationFailed(f"the model's chat template failed: {exc}") from exc
        return result.prompt, True

    def prompt_text(self, request: GenerateRequest) -> str:
        if request.tokens is not None:
            return self.detokenize(list(request.tokens))
        if request.messages is None:
            return request.prompt or ""
        return self._chat_prompt(request.messages, request.tools)[0]

    def prompt_tokens(self, request: GenerateRequest) -> list[int]:
        if request.tokens is not None:
            return self._known_ids(list(request.tokens))
        if request.messages is not None:
            text, templated = self._chat_prompt(request.messages, request.tools)
            add_bos = not templated and self._llm._model.add_bos_token()
        else:
            text = request.prompt or ""
            add_bos = self._llm._model.add_bos_token()
        return self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    # -- generation ----------------------------------------------------------------------------
    def generate(self, request: GenerateRequest, cancel: threading.Event | None = None) -> Generation:
        if self._batched:
            raise OperationFailed("this model was loaded for batched generation", "generate through its batch")
        return Generation(lambda stats, stop: self._run(request, stats, stop), cancel=cancel)

    def _grammar(self, json_format: str | dict[str, Any] | None) -> Any:
        if json_format is None:
            return None
        from llama_cpp.llama_grammar import LlamaGrammar

        from slmctl.structured.gbnf import grammar_for

        return LlamaGrammar.from_string(grammar_for(json_format), verbose=False)

    def _run(self, request: GenerateRequest, stats: Stats, cancel: threading.Event) -> Iterator[str]:
        options = request.options
        with self._lock:
            llm = self._llm
            tokens = self.prompt_tokens(request)
            n_ctx = self.info.context_length
            if len(tokens) >= n_ctx:
                raise ContextOverflow(
                    f"the prompt is {len(tokens)} tokens but the context holds {n_ctx}",
                    "shorten the prompt or raise the context: --param num_ctx=N",
                )
            room = n_ctx - len(tokens)
            limit = min(options.num_predict, room) if options.num_predict >= 0 else room
            llm.set_seed(options.seed if options.seed >= 0 else random.randrange(2**31))
            llm.last_n_tokens_size = n_ctx if options.repeat_last_n < 0 else options.repeat_last_n
            stats.prompt_eval_count = len(tokens)
            yield from self._token_loop(tokens, limit, request, stats, cancel)

    def _token_loop(self, tokens: list[int], limit: int, request: GenerateRequest, stats: Stats,
                    cancel: threading.Event) -> Iterator[str]:
        stats.done_reason = "length"
        if limit == 0:
            return
        llm, vocab = self._llm, self._llm._model.vocab
        is_eog = self._llama_cpp.llama_vocab_is_eog
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        grammar = self._grammar(request.json_format)
        processors = [self._utf8_processor(len(tokens))] if grammar is not None else None
        steps = llm.generate(tokens, reset=True, grammar=grammar, logits_processor=processors,
                             **sampling_kwargs(request.options))
        yield from stream_text(
            steps, is_end=lambda t: not request.ignore_eos and is_eog(vocab, t),
            decode=lambda t: decoder.decode(llm.detokenize([t])), flush=lambda: decoder.decode(b"", final=True),
            stops=request.options.stop, limit=limit, stats=stats, cancel=cancel,
            score=self._scorer(request.logprobs))

    def utf8_guard(self) -> Any:
        """The vocabulary's :class:`~slmctl.backends.utf8_guard.Utf8Guard` (built on first use)."""
        if self._guard is None:
            from slmctl.backends.utf8_guard import Utf8Guard

            llm = self._llm
            self._guard = Utf8Guard.for_vocabulary(llm.n_vocab(), lambda t: llm.detokenize([t], special=True))
        return self._guard

    def _utf8_processor(self, prompt_length: int) -> Callable[[Any, Any], Any]:
        """A logits processor that keeps a constrained answer valid UTF-8 (see ``utf8_guard``)."""
        guard, state, seen = self.utf8_guard(), [0], [prompt_length]

        def keep_valid(input_ids: Any, logits: Any) -> Any:
            for token in input_ids[seen[0]:]:
                state[0] = guard.advance(state[0], int(token))
            seen[0] = len(input_ids)
            guard.mask(logits, state[0])
            return logits

        return keep_valid

    def _scorer(self, top: int | None) -> Callable[[int], TokenLogprob] | None:
        """Log-probabilities of each sampled token, read from the logits it was sampled from."""
        if top is None:
            return None
        import numpy as np

        llm = self._llm
        n_vocab = llm.n_vocab()

        def score(token: int) -> TokenLogprob:
            logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(n_vocab,))
            return score_token(logits, token, top, lambda t: llm.detokenize([t], special=True))

        return score

    def batch(self, slots: int) -> Any:
        """Continuous batching on a context of its own (see :mod:`slmctl.backends.gguf_batch`)."""
        if self._llm.context_params.embeddings:
            return None  # an embedding model answers embed() calls only
        from slmctl.backends.gguf_batch import GgufBatch

        return GgufBatch(self, slots)

    # -- other calls ---------------------------------------------------------------------------
    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        with self._lock:
            return self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)

    def detokenize(self, tokens: list[int]) -> str:
        with self._lock:
            return self._llm.detokenize(self._known_ids(tokens)).decode("utf-8", errors="replace")

    def _known_ids(self, tokens: list[int]) -> list[int]:
        return known_token_ids(tokens, self._llm.n_vocab())

    def embed(self, texts: list[str]) -> list[list[float]]:
        if not self._llm.context_params.embeddings:
            raise OperationFailed("this model was not loaded for embeddings")
        with self._lock:
            return self._llm.embed(texts, normalize=True)

    def close(self) -> None:
        with self._lock:
            if self._llm is not None:
                self._llm.close()
                self._llm = None
