"""OpenAI's JSON shapes: the request bodies of ``/v1`` and the objects (and stream chunks) it answers with.

Requests are pydantic models that ignore unknown fields (as OpenAI's clients expect of a compatible
server) and reject wrong types and out-of-range values (a 400 in OpenAI's error shape). Answers are
plain dictionaries in OpenAI's field order: ``chat.completion``, ``chat.completion.chunk``,
``text_completion``, ``embedding`` lists, ``model`` objects, and the ``usage`` and ``logprobs`` parts.
"""

from __future__ import annotations

import time
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from slmctl.backends.base import Stats, TokenLogprob
from slmctl.toolcalls import ToolCall

FinishReason = Literal["stop", "length", "tool_calls"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ContentPart(_Body):
    type: str
    text: str | None = None


class FunctionCall(_Body):
    name: str
    arguments: str = "{}"


class AssistantToolCall(_Body):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[ContentPart], None] = None
    name: str | None = None
    tool_calls: list[AssistantToolCall] | None = None
    tool_call_id: str | None = None


class FunctionSpec(_Body):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Body):
    type: Literal["function"] = "function"
    function: FunctionSpec


class NamedFunction(_Body):
    name: str


class NamedToolChoice(_Body):
    type: Literal["function"] = "function"
    function: NamedFunction


class JsonSchemaFormat(_Body):
    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=lambda: {"type": "object"}, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(_Body):
    include_usage: bool = False


class _Sampling(_Body):
    """The sampling fields chat and legacy completions share."""

    model: str = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    seed: int | None = None
    stop: Union[str, list[str], None] = None
    n: int = Field(default=1, ge=1, le=16)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None

    def options(self, max_tokens: int | None) -> dict[str, Any]:
        """The fields given, under the options table's names (unset fields keep the model's defaults)."""
        values = {"temperature": self.temperature, "top_p": self.top_p, "seed": self.seed,
                  "frequency_penalty": self.frequency_penalty, "presence_penalty": self.presence_penalty,
                  "num_predict": max_tokens,
                  "stop": [self.stop] if isinstance(self.stop, str) else self.stop}
        return {k: v for k, v in values.items() if v is not None}

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionBody(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=0)
    max_completion_tokens: int | None = Field(default=None, ge=0)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: Union[Literal["auto", "none", "required"], NamedToolChoice, None] = None
    parallel_tool_calls: bool = True


class CompletionBody(_Sampling):
    prompt: Union[str, list[str], list[int], list[list[int]]] = ""
    suffix: str | None = None
    max_tokens: int | None = Field(default=16, ge=0)
    logprobs: int | None = Field(default=None, ge=0, le=20)
    echo: bool = False
    best_of: int | None = Field(default=None, ge=1)


class EmbeddingBody(_Body):
    model: str = Field(min_length=1)
    input: Union[str, list[str], list[int], list[list[int]]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if value == "" or value == [] or (isinstance(value, list) and any(v in ("", []) for v in value)):
            raise ValueError("input must not be empty")
        return value


# -- answers ------------------------------------------------------------------------------------
def usage(prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    """``usage``; ``cached``: prompt tokens read from the prefix cache instead of being evaluated again."""
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


def usage_of(stats: list[Stats]) -> dict[str, Any]:
    """Usage of ``n`` choices of one prompt: the prompt counted once, every completion counted."""
    prompt = stats[0].prompt_eval_count if stats else 0
    return usage(prompt, sum(s.eval_count for s in stats), stats[0].prompt_cached_count if stats else 0)


def finish_reason(stats: Stats | None, calls: list[ToolCall]) -> FinishReason:
    if calls:
        return "tool_calls"
    return "length" if stats is not None and stats.done_reason == "length" else "stop"


def tool_calls_object(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json}}
            for c in calls]


def logprobs_content(entries: tuple[TokenLogprob, ...] | list[TokenLogprob]) -> list[dict[str, Any]]:
    """Chat's ``logprobs.content``: one object per token with its ``top_logprobs``."""
    return [{"token": e.token, "logprob": e.logprob, "bytes": list(e.bytes),
             "top_logprobs": [{"token": t, "logprob": v, "bytes": list(b)} for t, v, b in e.top]}
            for e in entries]


def legacy_logprobs(entries: list[TokenLogprob], offset: int = 0) -> dict[str, Any]:
    """Legacy completions' ``logprobs``: parallel lists of tokens, their logprobs, alternatives, offsets."""
    offsets, position = [], offset
    for e in entries:
        offsets.append(position)
        position += len(e.token)
    return {"tokens": [e.token for e in entries], "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": [{t: v for t, v, _ in e.top} for e in entries], "text_offset": offsets}


def chat_message(content: str, calls: list[ToolCall]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content if content or not calls else None}
    if calls:
        message["tool_calls"] = tool_calls_object(calls)
    return message


def completion_object(kind: Literal["chat.completion", "text_completion"], ident: str, model: str,
                      choices: list[dict[str, Any]], usage_: dict[str, Any]) -> dict[str, Any]:
    return {"id": ident, "object": kind, "created": int(time.time()), "model": model,
            "system_fingerprint": "slmctl", "choices": choices, "usage": usage_}


def chat_chunk(ident: str, model: str, created: int, index: int, delta: dict[str, Any],
               finish: FinishReason | None = None, logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": index, "delta": delta,
                              "logprobs": {"content": logprobs} if logprobs is not None else None,
                              "finish_reason": finish}
    return {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": "slmctl", "choices": [choice]}


def usage_chunk(kind: str, ident: str, model: str, created: int, usage_: dict[str, Any]) -> dict[str, Any]:
    """The last chunk of a stream with ``include_usage``: no choices, the usage of the whole request."""
    return {"id": ident, "object": kind, "created": created, "model": model, "system_fingerprint": "slmctl",
            "choices": [], "usage": usage_}


def model_object(manifest: Any) -> dict[str, Any]:
    """One model of ``GET /v1/models``: its name, when it entered the store and its namespace."""
    name = str(manifest.ref)
    owner = name.split("/")[-2] if "/" in name else "library"
    return {"id": name, "object": "model", "created": int(manifest.created_at.timestamp()), "owned_by": owner}


def error_object(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error body."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
