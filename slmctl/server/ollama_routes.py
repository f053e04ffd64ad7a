"""Ollama's generation routes: ``/api/generate``, ``/api/chat``, ``/api/embed``, ``/api/embeddings``.

Thin: parse the body (``slmctl.wire.ollama``), call the serving layer, shape the answer. Streaming is
NDJSON (Ollama's default, ``"stream": true``); the first chunk is awaited before the status line goes
out, so a request that fails before producing anything (unknown model, prompt over the context, full
queue) gets a real 4xx/503 instead of a 200 with an error line.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from slmctl.backends.base import ChatMessage, GenerateRequest, Stats
from slmctl.engine.runner import Runner
from slmctl.errors import UsageError
from slmctl.server.serving import Serving, Target, shorten
from slmctl.server.streaming import Relay, collect, ndjson_response
from slmctl.services.modelinfo import capabilities
from slmctl.toolcalls import ToolCall, ToolCallFilter, parse_tool_calls, tool_names
from slmctl.wire import ollama as wire

router = APIRouter()
#: Generation answers: NDJSON chunks while streaming (the default), one JSON object with "stream": false.
STREAMED: dict[int | str, dict[str, Any]] = {200: {"description": "The answer (NDJSON chunks when streaming)", "content": {
    "application/json": {"schema": {"type": "object"}}, "application/x-ndjson": {"schema": {"type": "string"}}}}}


def serving_of(request: Request) -> Serving:
    return request.app.state.serving


def json_format(value: Any) -> str | dict[str, Any] | None:
    if value in (None, ""):
        return None
    return value  # "json" or a JSON schema (validated by the body model)


def require(target: Target, capability: str, what: str, template: str | None = None) -> None:
    if capability not in capabilities(target.manifest, template or target.defaults.template):
        raise UsageError(f"model '{target.name}' does not support {what}",
                         "use a model that does (slmctl show MODEL lists its capabilities)")


async def respond(http: Request, relay: Relay, stream: bool, chunk: Callable[[str], dict[str, Any]],
                  final: Callable[[Stats, str], dict[str, Any]]) -> Any:
    if not stream:
        await collect(relay, http)
        return JSONResponse(final(relay.stats, relay.text))
    chunks = relay.__aiter__()
    first: list[dict[str, Any]] = []
    try:
        first.append(chunk(await chunks.__anext__()))
    except StopAsyncIteration:
        pass

    async def rest() -> AsyncIterator[dict[str, Any]]:
        async for text in chunks:
            yield chunk(text)
        yield final(relay.stats, "")

    return ndjson_response(first, rest() if first else _only(final, relay))


async def _only(final: Callable[[Stats, str], dict[str, Any]], relay: Relay) -> AsyncIterator[dict[str, Any]]:
    yield final(relay.stats, "")


async def respond_with_tools(http: Request, relay: Relay, stream: bool, model: str, offered: list[str]) -> Any:
    """A chat answer whose tool calls (to the ``offered`` functions) become ``message.tool_calls``; while
    streaming, text that may be a call is held back until it is decided."""
    if not stream:
        text = await collect(relay, http)
        content, calls = parse_tool_calls(text, offered)
        return JSONResponse(wire.chat_final(model, relay.stats, content, ollama_calls(calls)))
    split = ToolCallFilter(offered)

    async def pieces() -> AsyncIterator[dict[str, Any]]:
        async for piece in relay:
            text = split.feed(piece)
            if text:
                yield wire.chat_chunk(model, text)
        rest, calls = split.finish()
        if rest or calls:
            yield wire.chat_chunk(model, rest, ollama_calls(calls))
        yield wire.chat_final(model, relay.stats, "")

    events = pieces()
    first = [await anext(events)]  # errors before the first piece still become a real HTTP error
    return ndjson_response(first, events)


def ollama_calls(calls: list[ToolCall]) -> list[dict[str, Any]] | None:
    return [{"function": {"name": c.name, "arguments": c.arguments}} for c in calls] or None


async def load_or_unload(serving: Serving, target: Target, *, chat: bool) -> dict[str, Any]:
    """An empty prompt loads the model; with ``keep_alive: 0`` it unloads it."""
    if target.keep_alive == 0:
        await serving.unload(target)
        return wire.load_result(target.name, "unload", chat=chat)
    await serving.load(target)
    return wire.load_result(target.name, "load", chat=chat)


@router.post("/api/generate", responses=STREAMED)
async def generate(body: wire.GenerateBody, http: Request) -> Any:
    serving = serving_of(http)
    target = await serving.run(serving.target, body.model, body.options, body.keep_alive)
    if not body.prompt and not body.suffix:
        return await load_or_unload(serving, target, chat=False)
    require(target, "completion", "generate")
    if body.images:
        raise UsageError(f"model '{target.name}' does not support images", "send text only")
    fmt = json_format(body.format)
    if body.raw:
        request = GenerateRequest(target.sampling, prompt=body.prompt, json_format=fmt)
    else:
        from slmctl.engine import compose_system

        system = body.system if body.system is not None else compose_system(target.defaults.system,
                                                                            target.defaults.documents)
        messages = ([ChatMessage("system", system)] if system else []) + [ChatMessage("user", body.prompt)]
        if body.suffix:
            template = body.template or target.defaults.template
            require(target, "insert", "insert (suffix)", template)
            from slmctl.modelfile.prompting import render_messages

            prompt = render_messages(template or "", messages, suffix=body.suffix)
            request = GenerateRequest(target.sampling, prompt=prompt, json_format=fmt)
        else:
            request = serving.request(target, messages, json_format=fmt, template=body.template)
    relay = await serving.start(target, lambda runner: serving.fit_prompt(runner, target, request,
                                                                          truncate=body.truncate))
    name = target.name
    return await respond(http, relay, body.stream, lambda text: wire.generate_chunk(name, text),
                         lambda stats, text: wire.generate_final(name, stats, text))


def chat_messages(body: wire.ChatBody) -> list[ChatMessage]:
    out = []
    for m in body.messages:
        calls = tuple(c.model_dump() for c in m.tool_calls) if m.tool_calls else None
        out.append(ChatMessage(m.role, m.content, tool_calls=calls, name=m.tool_name))
    return out


@router.post("/api/chat", responses=STREAMED)
async def chat(body: wire.ChatBody, http: Request) -> Any:
    serving = serving_of(http)
    target = await serving.run(serving.target, body.model, body.options, body.keep_alive)
    if not body.messages:
        return await load_or_unload(serving, target, chat=True)
    require(target, "completion", "chat")
    if any(m.images for m in body.messages):
        raise UsageError(f"model '{target.name}' does not support images", "send text only")
    fmt = json_format(body.format)
    messages, head = serving.conversation(target, chat_messages(body))

    def make(kept: list[ChatMessage]) -> GenerateRequest:
        return serving.request(target, kept, json_format=fmt, tools=body.tools)

    def build(runner: Runner) -> GenerateRequest:
        if body.tools:
            serving.check_tools(target, runner)
        return serving.fit(runner, target, messages, head, make, truncate=body.truncate)

    relay = await serving.start(target, build)
    name = target.name
    if body.tools:
        return await respond_with_tools(http, relay, body.stream, name, tool_names(body.tools))
    return await respond(http, relay, body.stream, lambda text: wire.chat_chunk(name, text),
                         lambda stats, text: wire.chat_final(name, stats, text))


@router.post("/api/embed")
async def embed(body: wire.EmbedBody, http: Request) -> Any:
    serving = serving_of(http)
    start = time.perf_counter_ns()
    target = await serving.run(lambda: serving.target(body.model, body.options, body.keep_alive, embedding=True))
    require(target, "embedding", "embeddings")
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    if not texts or texts == [""]:
        await serving.load(target)
        return {"model": target.name, "embeddings": []}
    vectors, count = await serving.embed(target, texts, truncate=body.truncate)
    if body.dimensions:
        vectors = [shorten(v, body.dimensions) for v in vectors]
    return {"model": target.name, "embeddings": vectors, "total_duration": time.perf_counter_ns() - start,
            "load_duration": 0, "prompt_eval_count": count}


@router.post("/api/embeddings")
async def embeddings(body: wire.EmbeddingsBody, http: Request) -> Any:
    serving = serving_of(http)
    target = await serving.run(lambda: serving.target(body.model, body.options, body.keep_alive, embedding=True))
    require(target, "embedding", "embeddings")
    if not body.prompt:
        await serving.load(target)
        return {"embedding": []}
    vectors, _ = await serving.embed(target, [body.prompt], truncate=True)
    return {"embedding": vectors[0]}
