"""The ONNX backend on onnxruntime-genai (CPU, CUDA, DirectML, QNN, OpenVINO, WebGPU providers).

Owns everything onnxruntime-genai-specific: provider set-up, the chat template of the model folder,
the token loop (search options, stop strings matched on the streamed text since the runtime stops only
on EOS, ``num_predict`` mapped to the runtime's total ``max_length``, JSON guidance, cancellation),
and timings measured by slmctl (the runtime has no counters). ``onnxruntime_genai`` is imported only
when a model is loaded. A folder without ``genai_config.json`` is an encoder: see ``onnx_encoder``.
Models whose KV cache is one shared past/present buffer (GroupQueryAttention graphs, as the runtime's
model builder makes them) batch several generations on the runtime's Engine, in static batches, or
continuously for PagedAttention models (``engine.dynamic_batching`` in the config): see ``onnx_batch``.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from slmctl.backends.base import (
    Backend,
    Batch,
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
from slmctl.formats.onnx_folder import read_chat_template
from slmctl.devices import ONNX_PROVIDER_NAMES
from slmctl.errors import ContextOverflow, DeviceUnavailable, InvalidModelFile, OperationFailed, UsageError
from slmctl.options import (ONNX_GENAI_NAMES, ONNX_GENAI_UNSUPPORTED, LoadOptions, SamplingOptions, capped_context,
                            unsupported_options)

RUNTIME = "onnxruntime-genai"
#: Generic JSON for ``--format json`` (guidance needs a schema or a grammar).
ANY_JSON_SCHEMA = {"type": "object"}
log = logging.getLogger(__name__)


def json_guidance(json_format: str | dict[str, Any] | None) -> str | None:
    """The ``json_schema`` guidance text of a request's format (None: unconstrained)."""
    if json_format is None:
        return None
    return json.dumps(json_format if isinstance(json_format, dict) else ANY_JSON_SCHEMA)


def import_genai() -> Any:
    try:
        import onnxruntime_genai as og
    except ImportError as exc:
        raise DeviceUnavailable(f"the ONNX backend is not usable: cannot import onnxruntime_genai ({exc})",
                                "install it: pip install onnxruntime-genai") from exc
    return og


class OnnxGenaiBackend(Backend):
    """Loads ONNX Runtime GenAI folders (and, for embeddings, encoder folders)."""

    name = RUNTIME
    format = "onnx"

    def devices(self) -> list[str]:
        from slmctl.backends.probes import usable_onnx_providers

        return usable_onnx_providers()

    def load(self, path: Path, options: LoadOptions, *, device: str = "cpu", embedding: bool = False,
             provider_options: Mapping[str, str] | None = None, adapters: Sequence[Path] = (),
             slots: int | None = None) -> LoadedModel:
        if adapters:
            raise InvalidModelFile("LoRA adapters are supported for GGUF models only")
        if not (path / "genai_config.json").is_file():
            from slmctl.backends.onnx_encoder import OnnxEncoderModel

            return OnnxEncoderModel.load(path, options, device=device, provider_options=provider_options)
        og = import_genai()
        document = _genai_config(path)
        limit = capped_context(options.num_ctx, _context_length(document))
        shared_kv = _shares_kv_buffer(document)
        continuous = _batches_continuously(document)
        start = time.perf_counter_ns()
        try:
            config = og.Config(str(path))
            config.clear_providers()
            if device != "cpu":
                known = ONNX_PROVIDER_NAMES.get(device)
                provider = known.genai_name if known else device
                config.append_provider(provider)
                for key, value in (provider_options or {}).items():
                    config.set_provider_option(provider, key, str(value))
            if options.num_thread:
                config.overlay(json.dumps({"model": {"decoder": {"session_options": {
                    ONNX_GENAI_NAMES["num_thread"]: options.num_thread}}}}))
            if slots and (shared_kv or continuous):  # a request holds at most the context
                overlay: dict[str, Any] = {"search": {"max_length": limit}}
                if not continuous:  # the static batch: ``slots`` rows (4 unless told) of KV, sized by max_length
                    overlay["engine"] = {"static_batching": {"max_batch_size": slots}}
                config.overlay(json.dumps(overlay))
            model = og.Model(config)
            tokenizer = og.Tokenizer(model)
        except RuntimeError as exc:
            raise self._load_error(path, device, exc) from exc
        load_ns = time.perf_counter_ns() - start
        info = LoadedInfo("onnx", device, limit, load_ns, read_chat_template(path))
        return OnnxGenaiModel(og, model, tokenizer, info, _eos_ids(tokenizer), _vocab_size(document),
                              engine_batching=shared_kv or continuous, engine_continuous=continuous)

    @staticmethod
    def _load_error(path: Path, device: str, exc: RuntimeError) -> Exception:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if device != "cpu" and any(w in reason.lower() for w in ("provider", "not available", "not supported",
                                                                  "cannot load", "library")):
            return DeviceUnavailable(f"the {device} execution provider failed to start: {reason}",
                                     "run 'slmctl doctor' to see the usable providers, or use --device cpu")
        if any(w in reason.lower() for w in ("json", "config", "parse", "protobuf", "invalid", "no such file")):
            return InvalidModelFile(f"onnxruntime-genai refused {path.name}: {reason}",
                                    "the ONNX model folder is incomplete or not supported by this runtime")
        return OperationFailed(f"onnxruntime-genai could not load the model: {reason}")


def _genai_config(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / "genai_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidModelFile(f"cannot read {path.name}/genai_config.json: {exc}",
                               "the ONNX model folder is incomplete or not supported by this runtime") from exc


def _context_length(config: dict[str, Any]) -> int:
    model = config.get("model", {})
    return int(model.get("context_length") or config.get("search", {}).get("max_length") or 2048)


def _shares_kv_buffer(config: dict[str, Any]) -> bool:
    """Whether past and present KV tensors share one buffer (a GroupQueryAttention graph): only then can
    the Engine end one row of a batch early (a Concat cache breaks the next step, and the Engine)."""
    return bool(config.get("search", {}).get("past_present_share_buffer", False))


def _batches_continuously(config: dict[str, Any]) -> bool:
    """Whether the Engine batches this model continuously: its ``engine.dynamic_batching`` section (the
    model builder writes it for PagedAttention models, CUDA or WebGPU in 16 bits) selects the Engine's
    dynamic path, where requests join and leave the running batch at any step."""
    engine = config.get("engine")
    return isinstance(engine, dict) and isinstance(engine.get("dynamic_batching"), dict)


def _vocab_size(config: dict[str, Any]) -> int:
    return int(config.get("model", {}).get("vocab_size") or 2**31 - 1)


def _eos_ids(tokenizer: Any) -> frozenset[int]:
    try:
        return frozenset(int(t) for t in tokenizer.eos_token_ids)
    except (AttributeError, TypeError):
        return frozenset()


class OnnxGenaiModel(LoadedModel):
    """One ``og.Model`` (safe to share between threads; one generator per generation)."""

    def __init__(self, og: Any, model: Any, tokenizer: Any, info: LoadedInfo, eos_ids: frozenset[int],
                 vocab_size: int, *, engine_batching: bool = False, engine_continuous: bool = False) -> None:
        self._og = og
        #: Whether the runtime's Engine can batch this model's generations (see :meth:`batch`).
        self.engine_batching = engine_batching
        #: Whether it batches them continuously (a PagedAttention model), else in static batches.
        self.engine_continuous = engine_continuous
        self._fallback_logged = False
        self._vocab_size = vocab_size
        self._model = model
        self._tokenizer = tokenizer
        self._eos = eos_ids
        self.info = info

    #: The guidance text of a request's JSON format (for the batch too).
    json_guidance = staticmethod(json_guidance)

    def unsupported(self, options: SamplingOptions) -> list[str]:
        return unsupported_options(RUNTIME, ONNX_GENAI_UNSUPPORTED, options)

    # -- prompt --------------------------------------------------------------------------------
    def prompt_text(self, request: GenerateRequest) -> str:
        if request.tokens is not None:
            return self.detokenize(list(request.tokens))  # checked there
        if request.messages is None:
            return request.prompt or ""
        if self.info.chat_template is None:
            return fallback_prompt(request.messages)
        payload = json.dumps([m.template_dict() for m in request.messages])
        extra = {"tools": json.dumps(list(request.tools))} if request.tools else {}
        try:
            return self._tokenizer.apply_chat_template(payload, add_generation_prompt=True, **extra)
        except RuntimeError as exc:
            raise OperationFailed(f"the model's chat template failed: {exc}") from exc

    def prompt_tokens(self, request: GenerateRequest) -> list[int]:
        if request.tokens is not None:
            return known_token_ids(request.tokens, self._vocab_size)
        return [int(t) for t in self._tokenizer.encode(self.prompt_text(request))]

    # -- generation ----------------------------------------------------------------------------
    def generate(self, request: GenerateRequest, cancel: threading.Event | None = None) -> Generation:
        return Generation(lambda stats, stop: self._run(request, stats, stop), cancel=cancel)

    def _params(self, options: SamplingOptions, max_length: int, json_format: Any, ignore_eos: bool) -> Any:
        params = self._og.GeneratorParams(self._model)
        greedy = options.temperature <= 0
        search: dict[str, Any] = {"max_length": max_length, "do_sample": not greedy}
        if ignore_eos:
            search["min_length"] = max_length  # the runtime then never ends on an EOS token
        if not greedy:
            search.update({
                ONNX_GENAI_NAMES["temperature"]: options.temperature,
                ONNX_GENAI_NAMES["top_k"]: options.top_k or 0,
                ONNX_GENAI_NAMES["top_p"]: options.top_p,
                ONNX_GENAI_NAMES["seed"]: options.seed if options.seed >= 0 else random.randrange(2**31),
            })
        search[ONNX_GENAI_NAMES["repeat_penalty"]] = options.repeat_penalty
        params.set_search_options(**search)
        schema = self.json_guidance(json_format)
        if schema is not None:
            params.set_guidance("json_schema", schema)
        return params

    def prompt_and_limit(self, request: GenerateRequest) -> tuple[list[int], int]:
        """The prompt's tokens and the most tokens the answer may have (``num_predict`` within the
        context); raises on an empty prompt or one the context cannot hold."""
        options = request.options
        tokens = self.prompt_tokens(request)
        n_ctx = self.info.context_length
        if not tokens:
            raise UsageError("the prompt is empty (it has no tokens)", "give the model some text")
        if len(tokens) >= n_ctx:
            raise ContextOverflow(f"the prompt is {len(tokens)} tokens but the context holds {n_ctx}",
                                  "shorten the prompt or raise the context: --param num_ctx=N")
        room = n_ctx - len(tokens)
        return tokens, min(options.num_predict, room) if options.num_predict >= 0 else room

    def batch(self, slots: int) -> Batch | None:
        """Generations decoded together on the runtime's Engine, when this model's graph allows it."""
        if self.engine_batching:
            from slmctl.backends.onnx_batch import OnnxEngineBatch

            return OnnxEngineBatch(self, slots, continuous=self.engine_continuous)
        if not self._fallback_logged:
            self._fallback_logged = True
            log.info("this ONNX model's KV cache is not a shared past/present buffer "
                     "(past_present_share_buffer: false), which onnxruntime-genai's Engine cannot batch: "
                     "it serves one request at a time")
        return None

    def _run(self, request: GenerateRequest, stats: Stats, cancel: threading.Event) -> Iterator[str]:
        tokens, limit = self.prompt_and_limit(request)
        stats.prompt_eval_count = len(tokens)
        stats.done_reason = "length"
        if limit == 0:
            return
        try:
            generator = self._og.Generator(self._model, self._params(request.options, len(tokens) + limit,
                                                                      request.json_format, request.ignore_eos))
        except RuntimeError as exc:
            raise OperationFailed(f"onnxruntime-genai could not start the generation: {exc}") from exc
        yield from self._token_loop(generator, tokens, limit, request, stats, cancel)

    def _token_loop(self, generator: Any, tokens: list[int], limit: int, request: GenerateRequest,
                    stats: Stats, cancel: threading.Event) -> Iterator[str]:
        stream = self._tokenizer.create_stream()
        top = request.logprobs
        logits: list[Any] = []  # the logits the last token was sampled from (when scoring)

        def steps() -> Iterator[int]:
            generator.append_tokens(tokens)  # the prompt is evaluated in the first step
            while not generator.is_done():
                if top is not None:
                    logits[:] = [generator.get_logits()]
                generator.generate_next_token()
                yield int(generator.get_next_tokens()[0])

        def score(token: int) -> TokenLogprob:
            return score_token(logits[0], token, top or 0, lambda t: self.detokenize([t]).encode("utf-8"))

        yield from stream_text(
            steps(), is_end=lambda t: not request.ignore_eos and t in self._eos, decode=stream.decode,
            flush=lambda: "", stops=request.options.stop, limit=limit, stats=stats, cancel=cancel,
            score=score if top is not None else None)

    # -- other calls ---------------------------------------------------------------------------
    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        return [int(t) for t in self._tokenizer.encode(text)]

    def detokenize(self, tokens: list[int]) -> str:
        import numpy as np

        return self._tokenizer.decode(np.asarray(known_token_ids(tokens, self._vocab_size), dtype=np.int32))

    def embed(self, texts: list[str]) -> list[list[float]]:
        raise OperationFailed("this ONNX GenAI model is a text generator; embeddings need an encoder model",
                              "import a sentence-embedding ONNX export (model.onnx + tokenizer.json)")

    def close(self) -> None:
        self._model = None
        self._tokenizer = None
