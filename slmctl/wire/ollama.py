"""Ollama's JSON shapes: the request bodies of its API and the objects it answers with.

The server's Ollama routes and the CLI's ``--json`` output (``run --json``, ``ps --json``) both build
their objects here, so the two cannot drift. Requests are pydantic models that ignore unknown fields
(as Ollama does) and reject wrong types; answers are plain dictionaries in Ollama's field order, with
durations in nanoseconds and times in RFC 3339 (UTC).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from slmctl.backends.base import Stats

def _json_format(value: Any) -> Any:
    if value is None or value in ("", "json") or isinstance(value, dict):
        return value or None
    raise ValueError('format must be "json" or a JSON schema object')


JsonFormat = Annotated[Any, BeforeValidator(_json_format)]
KeepAlive = Union[str, int, float, None]


def timestamp(when: datetime | None = None) -> str:
    """Ollama's ``created_at``: RFC 3339 in UTC with a ``Z``."""
    when = (when or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return when.isoformat().replace("+00:00", "Z")


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _legacy_name(cls, data: Any) -> Any:
        """Older clients send ``name`` where newer ones send ``model``."""
        if isinstance(data, dict) and "model" in cls.model_fields and not data.get("model") and data.get("name"):
            data = {**data, "model": data["name"]}
        return data


class ToolFunctionCall(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="ignore")
    function: ToolFunctionCall


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: list[str] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None


class GenerateBody(_Body):
    model: str = Field(min_length=1)
    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    stream: bool = True
    raw: bool = False
    format: JsonFormat = None
    images: list[str] | None = None
    keep_alive: KeepAlive = None
    options: dict[str, Any] | None = None
    truncate: bool = True


class ChatBody(_Body):
    model: str = Field(min_length=1)
    messages: list[Message] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    format: JsonFormat = None
    stream: bool = True
    keep_alive: KeepAlive = None
    options: dict[str, Any] | None = None
    truncate: bool = True


class EmbedBody(_Body):
    model: str = Field(min_length=1)
    input: Union[str, list[str]] = ""
    truncate: bool = True
    dimensions: int | None = Field(default=None, ge=1)
    keep_alive: KeepAlive = None
    options: dict[str, Any] | None = None


class EmbeddingsBody(_Body):
    model: str = Field(min_length=1)
    prompt: str = ""
    keep_alive: KeepAlive = None
    options: dict[str, Any] | None = None


class ModelBody(_Body):
    """``show``, ``delete``: a model name."""

    model: str = Field(min_length=1)
    verbose: bool = False


class CopyBody(_Body):
    source: str = Field(min_length=1)
    destination: str = Field(min_length=1)


class PullBody(_Body):
    model: str = Field(min_length=1)
    insecure: bool = False
    stream: bool = True


class CreateBody(_Body):
    model: str = Field(min_length=1)
    modelfile: str | None = None
    from_: str | None = Field(default=None, alias="from")
    files: dict[str, str] | None = None
    adapters: dict[str, str] | None = None
    template: str | None = None
    license: Union[str, list[str], None] = None
    system: str | None = None
    parameters: dict[str, Any] | None = None
    messages: list[Message] | None = None
    quantize: str | None = None
    stream: bool = True


# -- answers ------------------------------------------------------------------------------------
def metrics(stats: Stats) -> dict[str, Any]:
    """The timing fields of a final chunk (nanoseconds)."""
    return {
        "total_duration": stats.total_duration,
        "load_duration": stats.load_duration,
        "prompt_eval_count": stats.prompt_eval_count,
        "prompt_eval_duration": stats.prompt_eval_duration,
        "eval_count": stats.eval_count,
        "eval_duration": stats.eval_duration,
    }


def generate_chunk(model: str, text: str) -> dict[str, Any]:
    return {"model": model, "created_at": timestamp(), "response": text, "done": False}


def generate_final(model: str, stats: Stats, response: str = "") -> dict[str, Any]:
    """The last ``/api/generate`` object (``run --json`` prints it with the whole response)."""
    return {"model": model, "created_at": timestamp(), "response": response, "done": True,
            "done_reason": stats.done_reason, **metrics(stats)}


def load_result(model: str, reason: Literal["load", "unload"], *, chat: bool = False) -> dict[str, Any]:
    """The answer to an empty prompt (load) or an empty prompt with ``keep_alive: 0`` (unload)."""
    body: dict[str, Any] = {"model": model, "created_at": timestamp()}
    body.update({"message": {"role": "assistant", "content": ""}} if chat else {"response": ""})
    return {**body, "done": True, "done_reason": reason}


def chat_chunk(model: str, text: str, tool_calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"model": model, "created_at": timestamp(), "message": message, "done": False}


def chat_final(model: str, stats: Stats, content: str = "",
               tool_calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"model": model, "created_at": timestamp(), "message": message, "done": True,
            "done_reason": stats.done_reason, **metrics(stats)}


def details(manifest: Any) -> dict[str, Any]:
    """A model's ``details`` object (tags, show, ps)."""
    d = manifest.details
    return {
        "parent_model": manifest.base or "",
        "format": manifest.format,
        "family": d.family or d.architecture or "",
        "families": [d.family or d.architecture] if (d.family or d.architecture) else None,
        "parameter_size": d.parameter_size or "",
        "quantization_level": d.quantization or "",
    }


def tags_entry(manifest: Any) -> dict[str, Any]:
    """One model of ``GET /api/tags``."""
    name = str(manifest.ref)
    return {"name": name, "model": name, "modified_at": timestamp(manifest.created_at),
            "size": manifest.total_size, "digest": manifest.digest().removeprefix("sha256:"),
            "details": details(manifest)}


def show_object(engine: Any, manifest: Any) -> dict[str, Any]:
    """``POST /api/show``: the Modelfile, parameters, template, details, model_info and capabilities."""
    from slmctl.services.modelinfo import capabilities, modelfile_text, parameters_text, show_info

    info = show_info(engine, manifest)
    defaults = engine.defaults(manifest)
    d = manifest.details
    arch = d.architecture or manifest.format
    model_info = {"general.architecture": arch, "general.parameter_count": d.parameter_count,
                  f"{arch}.context_length": d.context_length}
    return {
        "license": info["license"] or "",
        "modelfile": modelfile_text(engine, manifest),
        "parameters": parameters_text(defaults),
        "template": info["template"] or "",
        "system": info["system"] or "",
        "details": details(manifest),
        "model_info": {k: v for k, v in model_info.items() if v is not None},
        "capabilities": capabilities(manifest, defaults.template),
        "modified_at": timestamp(manifest.created_at),
    }


#: ``expires_at`` of a model that never expires: what Ollama answers for keep_alive < 0.
FOREVER = datetime(2318, 1, 1, tzinfo=timezone.utc)


def ps_entry(manifest: Any, *, size: int, size_vram: int, expires_at: datetime | None,
             context_length: int) -> dict[str, Any]:
    """One model of ``GET /api/ps`` (and of ``slmctl ps --json``). ``expires_at`` None = never."""
    name = str(manifest.ref)
    return {"name": name, "model": name, "size": size, "digest": manifest.digest().removeprefix("sha256:"),
            "details": details(manifest), "expires_at": timestamp(expires_at or FOREVER),
            "size_vram": size_vram, "context_length": context_length}


def status_event(status: str) -> dict[str, Any]:
    """A pull/create progress line: ``{"status": ...}`` (pull events carry digest, total, completed too)."""
    return {"status": status}
