"""OpenAI's API under ``/v1``: chat completions, legacy completions, embeddings and models.

Thin: parse the body (``slmctl.wire.openai``), resolve the model and its options through the serving
layer, hand generation to :mod:`slmctl.server.openai_serving`, shape the answer. Streams are Server-Sent
Events; errors, before or during a stream, are in OpenAI's shape (``slmctl.server.errors``). Nothing
here depends on the port the server listens on.
"""

from __future__ import annotations

import base64
import time
from typing import Any

from fastapi import APIRouter, Request

from slmctl.backends.base import GenerateRequest
from slmctl.engine.runner import Runner
from slmctl.errors import ModelNotFound, UsageError
from slmctl.server.errors import error_code
from slmctl.server.openai_serving import (
    chat_answer,
    chat_chunks,
    chat_messages,
    chat_plan,
    check_tools,
    completion_id,
    primed,
    start_choices,
)
from slmctl.server.ollama_routes import require, serving_of
from slmctl.server.serving import Serving, Target, shorten
from slmctl.server.streaming import Relay, collect, error_message, sse_response
from slmctl.wire import openai as wire

router = APIRouter(prefix="/v1")

#: Completions: server-sent events with "stream": true, one JSON object without.
#: One server-sent event of a stream (OpenAPI 3.0/3.1 give an event stream's ``schema`` per event, as 3.2's
#: ``itemSchema``): ``data`` is a JSON chunk, or ``[DONE]`` to end the stream.
SSE_EVENT = {"type": "object", "required": ["data"],
             "properties": {"data": {"type": "string"}, "event": {"type": "string"}, "id": {"type": "string"},
                            "retry": {"type": "integer"}}}
SSE: dict[int | str, dict[str, Any]] = {200: {"description": "The completion (server-sent events when streaming)",
                                              "content": {"application/json": {"schema": {"type": "object"}},
                                                          "text/event-stream": {"schema": SSE_EVENT}}}}


def stream_error(error: BaseException) -> dict[str, Any]:
    status = getattr(error, "http_status", 500)
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return wire.error_object(error_message(error), kind, error_code(error))


async def target_for(serving: Serving, model: str, options: dict[str, Any], *, embedding: bool = False) -> Target:
    try:
        return await serving.run(lambda: serving.target(model, options, None, embedding=embedding))
    except ModelNotFound:
        raise ModelNotFound(f"The model '{model}' does not exist", "list the models: GET /v1/models") from None


@router.post("/chat/completions", responses=SSE)
async def chat_completions(body: wire.ChatCompletionBody, http: Request) -> Any:
    serving = serving_of(http)
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    target = await target_for(serving, body.model, body.options(max_tokens))
    require(target, "completion", "chat")
    plan = chat_plan(body)
    messages, head = serving.conversation(target, chat_messages(body))
    if body.user:
        serving.log_user(body.user, "chat.completions", target.name)

    def build(runner: Runner, sampling: Any) -> GenerateRequest:
        check_tools(target, runner, plan)
        return serving.fit(runner, target, messages, head, lambda kept: serving.request(
            target, kept, json_format=plan.json_format, tools=plan.tools, logprobs=plan.logprobs,
            sampling=sampling), truncate=False)

    relays = await start_choices(serving, target, body.n, build)
    if not body.stream:
        return await chat_answer(http, relays, target.name, plan)
    events = await primed(chat_chunks(relays, target.name, plan, body.include_usage))
    return sse_response(events, stream_error)


# -- legacy completions -------------------------------------------------------------------------------
def completion_prompts(body: wire.CompletionBody) -> list[str | list[int]]:
    prompt = body.prompt
    if isinstance(prompt, str):
        return [prompt]
    if prompt and all(isinstance(p, int) for p in prompt):
        return [list(prompt)]  # type: ignore[arg-type]
    return list(prompt)  # type: ignore[arg-type]


def completion_request(serving: Serving, target: Target, prompt: str | list[int], suffix: str | None,
                       sampling: Any, logprobs: int | None) -> GenerateRequest:
    """The raw prompt (legacy completions continue the text as given), or a fill-in-the-middle prompt
    built with the model's TEMPLATE when a ``suffix`` is given."""
    if isinstance(prompt, list):
        if suffix:
            raise UsageError("suffix needs a text prompt, not token ids")
        return GenerateRequest(sampling, tokens=tuple(prompt), logprobs=logprobs)
    if suffix:
        template = target.defaults.template
        require(target, "insert", "insert (suffix)", template)
        from slmctl.backends.base import ChatMessage
        from slmctl.modelfile.prompting import render_messages

        text = render_messages(template or "", [ChatMessage("user", prompt)], suffix=suffix)
        return GenerateRequest(sampling, prompt=text, logprobs=logprobs)
    return GenerateRequest(sampling, prompt=prompt, logprobs=logprobs)


@router.post("/completions", responses=SSE)
async def completions(body: wire.CompletionBody, http: Request) -> Any:
    serving = serving_of(http)
    if body.best_of is not None and body.best_of != body.n:
        raise UsageError("best_of other than n is not supported", "drop best_of, or set it equal to n")
    target = await target_for(serving, body.model, body.options(body.max_tokens))
    require(target, "completion", "completions")
    prompts = completion_prompts(body)
    if not prompts:
        raise UsageError("prompt must not be empty")
    echoes: dict[int, str] = {}
    relays: list[Relay] = []
    try:
        for p_index, prompt in enumerate(prompts):
            def build(runner: Runner, sampling: Any, prompt: Any = prompt, p_index: int = p_index) -> GenerateRequest:
                request = completion_request(serving, target, prompt, body.suffix, sampling, body.logprobs)
                if body.echo:
                    echoes[p_index] = prompt if isinstance(prompt, str) else runner.call("detokenize", prompt)
                return serving.fit_prompt(runner, target, request, truncate=False)

            relays += await start_choices(serving, target, body.n, build)
    except BaseException:
        for relay in relays:
            relay.cancel()
        raise
    ident, created = completion_id("cmpl"), int(time.time())

    def echo(index: int) -> str:
        return echoes.get(index // body.n, "") if body.echo else ""

    def logprobs_of(relay: Relay, offset: int) -> Any:
        return wire.legacy_logprobs(relay.logprobs, offset) if body.logprobs is not None else None

    if not body.stream:
        choices = []
        try:
            for index, relay in enumerate(relays):
                text = await collect(relay, http)
                choices.append({"text": echo(index) + text, "index": index,
                                "logprobs": logprobs_of(relay, len(echo(index))),
                                "finish_reason": wire.finish_reason(relay.stats, [])})
        finally:
            for relay in relays:
                relay.cancel()
        usage = wire.usage(sum(r.stats.prompt_eval_count for r in relays[:: body.n] if r.stats),
                           sum(r.stats.eval_count for r in relays if r.stats))
        return {**wire.completion_object("text_completion", ident, target.name, choices, usage)}

    async def chunks() -> Any:
        def chunk(index: int, text: str, finish: Any = None, logprobs: Any = None) -> dict[str, Any]:
            return {"id": ident, "object": "text_completion", "created": created, "model": target.name,
                    "system_fingerprint": "slmctl",
                    "choices": [{"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish}]}

        try:
            for index, relay in enumerate(relays):
                pieces = relay.__aiter__()
                piece = await anext(pieces, None)
                if echo(index):
                    yield chunk(index, echo(index))
                while piece is not None:
                    lp = wire.legacy_logprobs(list(getattr(piece, "logprobs", ()))) if body.logprobs is not None else None
                    yield chunk(index, piece, logprobs=lp)
                    piece = await anext(pieces, None)
                yield chunk(index, "", wire.finish_reason(relay.stats, []))
        finally:
            for relay in relays:
                relay.cancel()
        if body.include_usage:
            usage = wire.usage(sum(r.stats.prompt_eval_count for r in relays[:: body.n] if r.stats),
                               sum(r.stats.eval_count for r in relays if r.stats))
            yield wire.usage_chunk("text_completion", ident, target.name, created, usage)

    return sse_response(await primed(chunks()), stream_error)


# -- embeddings and models ----------------------------------------------------------------------------
@router.post("/embeddings")
async def embeddings(body: wire.EmbeddingBody, http: Request) -> Any:
    serving = serving_of(http)
    target = await target_for(serving, body.model, {}, embedding=True)
    require(target, "embedding", "embeddings")
    raw = body.input
    inputs: list[Any] = [raw] if isinstance(raw, str) or (raw and isinstance(raw[0], int)) else list(raw)
    tokens = [i for i in inputs if isinstance(i, list)]
    texts_of_tokens = iter(await serving.detokenize(target, tokens)) if tokens else iter(())
    texts = [next(texts_of_tokens) if isinstance(i, list) else i for i in inputs]
    if not all(texts):  # as OpenAI: an empty string (or token ids that decode to nothing) is refused
        raise UsageError("input holds an empty text (or token ids that decode to nothing)", "send some text")
    vectors, count = await serving.embed(target, texts, truncate=False)
    if body.dimensions is not None:
        size = len(vectors[0]) if vectors else 0
        if body.dimensions > size:
            raise UsageError(f"dimensions is {body.dimensions} but model '{target.name}' makes {size}-dimension "
                             "vectors", f"ask for at most {size}")
        vectors = [shorten(v, body.dimensions) for v in vectors]
    data = [{"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
            for i, v in enumerate(vectors)]
    return {"object": "list", "data": data, "model": target.name, "usage": {"prompt_tokens": count,
                                                                          "total_tokens": count}}


def _encode(vector: list[float], encoding: str) -> Any:
    if encoding == "float":
        return vector
    import numpy as np

    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


@router.get("/models")
async def models(http: Request) -> dict[str, Any]:
    serving = serving_of(http)
    manifests = await serving.run(serving.engine.store.list)
    return {"object": "list", "data": [wire.model_object(m) for m in manifests]}


@router.get("/models/{model:path}")
async def model(model: str, http: Request) -> dict[str, Any]:
    serving = serving_of(http)
    try:
        manifest = await serving.run(serving.manifest, model)
    except ModelNotFound:
        raise ModelNotFound(f"The model '{model}' does not exist", "list the models: GET /v1/models") from None
    return wire.model_object(manifest)
