"""Serving OpenAI's chat and legacy completions: from a parsed body to choices, plain or streamed.

Owns what ``/v1`` adds to the protocol-neutral serving layer: the messages in OpenAI's roles and
content parts, what ``tools``/``tool_choice``/``response_format`` ask of the runtime (a JSON schema it
enforces, tools for the chat template, which calls to read back), ``n`` choices (one generation each,
queued together), log-probabilities, and the answer objects and stream chunks of ``slmctl.wire.openai``.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from slmctl.backends.base import ChatMessage, GenerateRequest
from slmctl.engine.runner import Runner
from slmctl.errors import UsageError
from slmctl.server.serving import Serving, Target
from slmctl.server.streaming import Relay, collect
from slmctl.toolcalls import ToolCall, ToolCallFilter, forced_call_schema, parse_tool_calls, tool_names
from slmctl.wire import openai as wire


@dataclass(frozen=True)
class ChatPlan:
    """What a chat request asks of the model beyond plain text."""

    json_format: Any = None
    #: Tools rendered into the prompt (None: none offered, or ``tool_choice: none``).
    tools: list[dict[str, Any]] | None = None
    #: Functions whose calls are read back out of the answer (empty: no call parsing).
    offered: list[str] = field(default_factory=list)
    #: The call is forced by a schema (``required`` or a named function): the template need not know tools.
    forced: bool = False
    logprobs: int | None = None
    #: ``parallel_tool_calls``: False keeps only the first call of an answer.
    parallel: bool = True

    def calls_in(self, text: str) -> tuple[str, list[ToolCall]]:
        """The answer's text and its calls to the offered functions."""
        if not self.offered:
            return text, []
        content, calls = parse_tool_calls(text, self.offered)
        return content, calls if self.parallel else calls[:1]


def response_json_format(body: wire.ChatCompletionBody) -> Any:
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return "json"
    if fmt.json_schema is None:
        raise UsageError("response_format json_schema needs a 'json_schema' object with a 'schema'",
                         'send {"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}')
    return fmt.json_schema.schema_


def chat_plan(body: wire.ChatCompletionBody) -> ChatPlan:
    if body.top_logprobs is not None and not body.logprobs:
        raise UsageError("top_logprobs needs logprobs: true", "set logprobs to true, or drop top_logprobs")
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    fmt = response_json_format(body)
    tools = [t.model_dump(exclude_none=True) for t in body.tools] if body.tools else None
    choice = body.tool_choice or ("auto" if tools else "none")
    if choice == "none" or not tools:
        if choice not in ("none", "auto"):
            forced_call_schema([], None)  # raises: a call is required but no tools were given
        return ChatPlan(fmt, None, [], False, logprobs)
    if choice == "auto":
        return ChatPlan(fmt, tools, tool_names(tools), False, logprobs, body.parallel_tool_calls)
    name = None if choice == "required" else choice.function.name  # type: ignore[union-attr]
    return ChatPlan(forced_call_schema(tools, name), tools, tool_names(tools), True, logprobs)


def chat_messages(body: wire.ChatCompletionBody) -> list[ChatMessage]:
    """OpenAI messages as the engine's: developer -> system, text parts joined, arguments decoded."""
    out: list[ChatMessage] = []
    names: dict[str, str] = {}
    for index, m in enumerate(body.messages):
        content = m.content if isinstance(m.content, str) else ""
        if isinstance(m.content, list):
            for part in m.content:
                if part.type != "text":
                    raise UsageError(f"messages[{index}]: content parts of type '{part.type}' are not supported",
                                     "send text parts only (this server runs text models)")
            content = "\n".join(p.text or "" for p in m.content)
        calls = None
        if m.tool_calls:
            calls = tuple({"id": c.id, "function": {"name": c.function.name,
                                                    "arguments": _arguments(c.function.arguments, index)}}
                          for c in m.tool_calls)
            names.update({c.id: c.function.name for c in m.tool_calls if c.id})
        role = "system" if m.role == "developer" else m.role
        name = m.name if m.role != "tool" else (m.name or names.get(m.tool_call_id or ""))
        out.append(ChatMessage(role, content, tool_calls=calls, tool_call_id=m.tool_call_id, name=name))
    return out


def _arguments(text: str, index: int) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise UsageError(f"messages[{index}].tool_calls: arguments are not valid JSON ({exc.msg})",
                         "send the arguments the model returned, unchanged") from None
    if not isinstance(value, dict):
        raise UsageError(f"messages[{index}].tool_calls: arguments must be a JSON object")
    return value


def check_tools(target: Target, runner: Runner, plan: ChatPlan) -> None:
    """Tools left to the model (``auto``) need a chat template that shows them to it; a forced call
    does not (the schema carries the function's name and parameters)."""
    if plan.tools is not None and not plan.forced:
        Serving.check_tools(target, runner)


async def start_choices(serving: Serving, target: Target, n: int,
                        build: Callable[[Runner, Any], GenerateRequest]) -> list[Relay]:
    """Queue ``n`` generations (``build(runner, sampling)`` makes each request; with a seed, choice ``i``
    uses seed + i so the choices differ yet repeat)."""
    relays: list[Relay] = []
    try:
        for i in range(n):
            sampling = target.sampling
            if i and sampling.seed >= 0:
                sampling = sampling.model_copy(update={"seed": sampling.seed + i})
            relays.append(await serving.start(target, lambda runner, s=sampling: build(runner, s)))
    except BaseException:
        for relay in relays:
            relay.cancel()
        raise
    return relays


def completion_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


async def chat_answer(http: Any, relays: list[Relay], model: str, plan: ChatPlan) -> dict[str, Any]:
    """A ``chat.completion`` with every choice."""
    choices = []
    try:
        for index, relay in enumerate(relays):
            text = await collect(relay, http)
            content, calls = plan.calls_in(text)
            logprobs = {"content": wire.logprobs_content(relay.logprobs)} if plan.logprobs is not None else None
            choices.append({"index": index, "message": wire.chat_message(content, calls), "logprobs": logprobs,
                            "finish_reason": wire.finish_reason(relay.stats, calls)})
    finally:
        for relay in relays:
            relay.cancel()
    usage = wire.usage_of([r.stats for r in relays if r.stats is not None])
    return wire.completion_object("chat.completion", completion_id("chatcmpl"), model, choices, usage)


async def chat_chunks(relays: list[Relay], model: str, plan: ChatPlan, include_usage: bool
                      ) -> AsyncIterator[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of every choice, one choice after the other. The first
    piece of text is read before anything is yielded, so errors before it become a real HTTP error."""
    ident, created = completion_id("chatcmpl"), int(time.time())

    def chunk(index: int, delta: dict[str, Any], finish: Any = None, logprobs: Any = None) -> dict[str, Any]:
        return wire.chat_chunk(ident, model, created, index, delta, finish, logprobs)

    try:
        for index, relay in enumerate(relays):
            pieces = relay.__aiter__()
            first = await anext(pieces, None)
            yield chunk(index, {"role": "assistant", "content": ""})
            split = ToolCallFilter(plan.offered) if plan.offered else None
            pending: list[Any] = []
            piece = first
            while piece is not None:
                pending.extend(getattr(piece, "logprobs", ()))
                text = split.feed(piece) if split else piece
                if text:
                    lp = wire.logprobs_content(pending) if plan.logprobs is not None else None
                    yield chunk(index, {"content": text}, logprobs=lp)
                    pending = []
                piece = await anext(pieces, None)
            calls: list[ToolCall] = []
            if split is not None:
                rest, calls = split.finish()
                calls = calls if plan.parallel else calls[:1]
                if rest:
                    lp = wire.logprobs_content(pending) if plan.logprobs is not None else None
                    yield chunk(index, {"content": rest}, logprobs=lp)
            for position, call in enumerate(calls):
                yield chunk(index, {"tool_calls": [{"index": position, "id": call.id, "type": "function",
                                                    "function": {"name": call.name, "arguments": ""}}]})
                yield chunk(index, {"tool_calls": [{"index": position,
                                                    "function": {"arguments": call.arguments_json}}]})
            yield chunk(index, {}, wire.finish_reason(relay.stats, calls))
    finally:
        for relay in relays:
            relay.cancel()
    if include_usage:
        usage = wire.usage_of([r.stats for r in relays if r.stats is not None])
        yield wire.usage_chunk("chat.completion.chunk", ident, model, created, usage)


async def primed(events: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """``events`` with its first item already read (so errors before it raise here, before any response)."""
    first = await anext(events, None)

    async def replay() -> AsyncIterator[Any]:
        if first is not None:
            yield first
        async for event in events:
            yield event

    return replay()
