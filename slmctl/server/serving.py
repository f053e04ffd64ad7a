"""The protocol-neutral serving layer: from an API request to the scheduler and back.

Routes (Ollama's now, OpenAI's later) parse their bodies, then call this layer to resolve the model,
merge options through the one options table, build the generation request exactly as ``run`` does
(:func:`slmctl.chat.build_request`), fit a conversation in the context, and start the generation on the
scheduler. Blocking work (loading a model, embedding, tokenizing) runs on a thread pool, never on the
event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from slmctl.backends.base import ChatMessage, GenerateRequest, Stats
from slmctl.chat import build_request, fit_conversation
from slmctl.engine import Engine, LoadPlan, ModelDefaults, Scheduler
from slmctl.engine.runner import Runner
from slmctl.errors import ContextOverflow, ModelNotFound, UsageError
from slmctl.names import parse_model_ref
from slmctl.options import ALL_KEYS, ALIASES, LoadOptions, SamplingOptions, build_options
from slmctl.server.config import ServeConfig
from slmctl.server.limits import cap_options
from slmctl.server.load_policy import LoadPolicy
from slmctl.server.streaming import Relay
from slmctl.settings import Settings
from slmctl.store import Manifest
from slmctl.units import parse_duration

log = logging.getLogger("slmctl.server")
T = TypeVar("T")
Default = str  # the scheduler's "default" keep-alive marker


@dataclass
class Target:
    """A resolved model and the options a request runs it with."""

    manifest: Manifest
    defaults: ModelDefaults
    plan: LoadPlan
    sampling: SamplingOptions
    keep_alive: float | None | Default

    @property
    def name(self) -> str:
        return str(self.manifest.ref)


class Serving:
    """What every API route needs: the store, the engine, the scheduler and a thread pool."""

    def __init__(self, engine: Engine, scheduler: Scheduler, config: ServeConfig, settings: Settings,
                 env: Mapping[str, str]) -> None:
        self.engine = engine
        self.scheduler = scheduler
        self.config = config
        self.settings = settings
        self.env = env
        self._pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="serve")
        #: The KV cache budget and the device fallback notice (deployment settings).
        self.load_policy = LoadPolicy(config)
        #: Called on the event loop with (model name, stats) when a generation ends (the metrics' hook).
        self.on_generation: list[Callable[[str, Stats], None]] = []

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """Run blocking ``func`` on the pool."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, lambda: func(*args))

    async def acquire(self, target: Target) -> tuple[Runner, int]:
        """The scheduler's :meth:`~slmctl.engine.Scheduler.acquire` on the pool; a request cancelled
        meanwhile (client gone, ``--request-timeout``) releases the runner once it arrives."""
        future = asyncio.get_running_loop().run_in_executor(
            self._pool, lambda: self.scheduler.acquire(target.plan, target.keep_alive))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(lambda done: None if done.cancelled() or done.exception() is not None
                                     else done.result()[0].release())
            raise

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- resolving ------------------------------------------------------------------------------
    def manifest(self, name: str) -> Manifest:
        try:
            return self.engine.store.get(parse_model_ref(name))
        except ModelNotFound:
            hint = (f"pull it into the shared store first (the pull Job: 'slmctl pull {name}')"
                    if getattr(self.engine.store, "read_only", False) else "pull it first: POST /api/pull")
            raise ModelNotFound(f"model '{name}' not found", hint) from None

    @staticmethod
    def keep_alive(value: Any) -> float | None | Default:
        if value is None or value == "":
            return "default"
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise UsageError(f"invalid keep_alive: {exc}") from None

    def options(self, defaults: ModelDefaults, api_options: Mapping[str, Any] | None
                ) -> tuple[LoadOptions, SamplingOptions]:
        """Model PARAMETERs < request options. Options the table does not know are ignored (as Ollama
        does, with a log line); a known option with a bad value is a 400."""
        known: dict[str, Any] = {}
        for key, value in (api_options or {}).items():
            name = ALIASES.get(key.lower(), key.lower())
            if name not in ALL_KEYS:
                log.warning("ignoring unknown option %r", key)
                continue
            known[name] = [value] if name == "stop" and isinstance(value, str) else value
        base: dict[str, Any] = {"flash_attn": True} if self.config.flash_attention else {}
        if self.config.num_ctx is not None:  # --num-ctx, a config file's max_context: under PARAMETER and request
            base["num_ctx"] = self.config.num_ctx
        return cap_options(build_options(base, defaults.params, known), known, self.config)

    def target(self, name: str, api_options: Mapping[str, Any] | None, keep_alive: Any, *,
               embedding: bool = False) -> Target:
        manifest = self.manifest(name)
        defaults = self.engine.defaults(manifest)
        load, sampling = self.options(defaults, api_options)
        plan = self.load_policy.apply(self.engine.plan(manifest, load, embedding=embedding))
        return Target(manifest, defaults, plan, sampling, self.keep_alive(keep_alive))

    @staticmethod
    def check_tools(target: Target, runner: Runner) -> None:
        """Refuse tools for a model whose template (the Modelfile's TEMPLATE, else the model's own chat
        template) does not render them: the model would never see them."""
        from slmctl.services.modelinfo import capabilities

        template = target.defaults.template
        renders = "tools" in capabilities(target.manifest, template) if template is not None \
            else "tools" in (runner.info.chat_template or "")
        if not renders:
            raise UsageError(f"model '{target.name}' does not support tools (its chat template does not render them)",
                             "use a model whose template supports tools (on /v1, tool_choice 'required' or a "
                             "named function works with any model: the call is enforced)")

    @staticmethod
    def log_user(user: str, endpoint: str, model: str) -> None:
        """OpenAI's ``user`` field: accepted and logged (who asked for what), never interpreted."""
        log.info("user %r: %s on %s", user[:128], endpoint, model)

    # -- model lifetime -------------------------------------------------------------------------
    async def load(self, target: Target) -> None:
        runner, _ = await self.acquire(target)
        runner.release()

    async def unload(self, target: Target) -> None:
        await self.run(self.scheduler.expire, target.plan.model)

    # -- generation -----------------------------------------------------------------------------
    def conversation(self, target: Target, messages: Sequence[ChatMessage]) -> tuple[list[ChatMessage], int]:
        """The model's system prompt (when the request brings none) and MESSAGE replay, then ``messages``;
        and how many leading messages (those, and the request's leading system messages) always stay."""
        from slmctl.engine import compose_system

        out: list[ChatMessage] = []
        if not any(m.role == "system" for m in messages):
            system = compose_system(target.defaults.system, target.defaults.documents)
            if system:
                out.append(ChatMessage("system", system))
        out += target.defaults.messages
        head = len(out)
        while head - len(out) < len(messages) - 1 and messages[head - len(out)].role == "system":
            head += 1
        return out + list(messages), head

    def request(self, target: Target, messages: Sequence[ChatMessage], *, json_format: Any = None,
                template: str | None = None, tools: Sequence[dict[str, Any]] | None = None,
                logprobs: int | None = None, sampling: SamplingOptions | None = None) -> GenerateRequest:
        return build_request(target.defaults, messages, sampling or target.sampling, json_format=json_format,
                             template=template, tools=tools, logprobs=logprobs)

    def fit(self, runner: Runner, target: Target, messages: list[ChatMessage], head: int,
            make: Callable[[list[ChatMessage]], GenerateRequest], *, truncate: bool) -> GenerateRequest:
        """The request for ``messages``, dropping the oldest turns when it would overflow the context and
        ``truncate`` allows (the first ``head`` messages and the last one stay); else a 400 naming both
        sizes. Blocking: runs on the pool (see :meth:`start`)."""
        context = runner.info.context_length
        kept, size = fit_conversation(messages, lambda c: len(runner.call("prompt_tokens", make(c))),
                                      context if truncate else None, head)
        if size >= context:
            raise ContextOverflow(f"the prompt is {size} tokens but the context holds {context}",
                                  "shorten the input, or raise the model's context (PARAMETER num_ctx; "
                                  "options.num_ctx on the Ollama API, where truncate also drops old turns)")
        if len(kept) < len(messages):
            log.info("%s: dropped %d older message(s) to fit the context of %d tokens",
                     target.name, len(messages) - len(kept), context)
        return make(kept)

    def fit_prompt(self, runner: Runner, target: Target, request: GenerateRequest, *,
                   truncate: bool) -> GenerateRequest:
        """A prompt over the context: keep its end (``truncate``) or refuse it with both sizes."""
        context = runner.info.context_length
        if request.prompt and len(request.prompt.encode("utf-8")) + 2 < context:
            return request  # a token takes at least one byte (plus BOS/EOS): it fits without counting
        tokens = runner.call("prompt_tokens", request)
        if not tokens:
            raise UsageError("the prompt is empty (it has no tokens)", "send some text or token ids")
        if len(tokens) < context:
            return request
        if not truncate:
            raise ContextOverflow(f"the prompt is {len(tokens)} tokens but the context holds {context}",
                                  "shorten the prompt, or raise the model's context (PARAMETER num_ctx; "
                                  "options.num_ctx on the Ollama API, where truncate also cuts the prompt)")
        room = target.sampling.num_predict if 0 < target.sampling.num_predict < context // 2 else context // 4
        keep = max(1, context - 1 - room)
        log.info("%s: prompt of %d tokens cut to its last %d", target.name, len(tokens), keep)
        return GenerateRequest(request.options, tokens=tuple(tokens[-keep:]), json_format=request.json_format,
                               logprobs=request.logprobs)

    async def start(self, target: Target, build: Callable[[Runner], GenerateRequest]) -> Relay:
        """Load the model if needed, build the request against it (``build`` runs on the pool and may
        count tokens), and queue it; the model stays held throughout, so ``keep_alive: 0`` cannot unload
        it in between. Errors before the first chunk surface on the relay's first read."""
        runner, load_ns = await self.acquire(target)
        try:
            request = await self.run(build, runner)
            relay = Relay()
            relay.on_done += [partial(observe, target.name) for observe in self.on_generation]
            relay.started(self.scheduler.stream(runner, target.plan, request, relay), load_ns)
        finally:
            runner.release()
        return relay

    async def embed(self, target: Target, texts: list[str], *, truncate: bool) -> tuple[list[list[float]], int]:
        """One vector per text, and the number of tokens read. Inputs over the context are cut to it
        (``truncate``) or refused with their size."""
        runner, _ = await self.acquire(target)
        try:
            context = runner.info.context_length

            def fit() -> tuple[list[str], int]:
                tokens = [runner.tokenize(t) for t in texts]
                too_long = [(i, len(t)) for i, t in enumerate(tokens) if context and len(t) > context]
                if too_long and not truncate:
                    index, size = too_long[0]
                    raise ContextOverflow(f"input {index} is {size} tokens but the context holds {context}",
                                          "shorten the input, or allow truncate")
                fitted = [runner.call("detokenize", t[:context]) if context and len(t) > context else text
                          for text, t in zip(texts, tokens)]
                return fitted, sum(min(len(t), context or len(t)) for t in tokens)

            fitted, count = await self.run(fit)
            return await self.run(runner.embed, fitted), count
        finally:
            runner.release()

    async def detokenize(self, target: Target, token_lists: list[list[int]]) -> list[str]:
        """The text of each token list, by the model's own tokenizer."""
        runner, _ = await self.acquire(target)
        try:
            return [await self.run(runner.call, "detokenize", tokens) for tokens in token_lists]
        finally:
            runner.release()


def shorten(vector: list[float], dimensions: int) -> list[float]:
    """Keep the first ``dimensions`` values and normalise again (Matryoshka-style truncation)."""
    if dimensions >= len(vector):
        return vector
    head = vector[:dimensions]
    norm = sum(x * x for x in head) ** 0.5 or 1.0
    return [x / norm for x in head]
