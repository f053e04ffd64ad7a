"""Function calling: what forces a call, and how calls are read back out of a model's answer.

Tools reach the model through its own chat template (the backends pass them as the template's ``tools``
variable). What comes back is text; this module finds the calls in it, in the formats chat models are
trained on: Hermes/Qwen ``<tool_call>{...}</tool_call>``, Phi-4 ``<|tool_call|>[...]<|/tool_call|>``,
Mistral ``[TOOL_CALLS][...]``, Llama's ``<|python_tag|>{...}``, or an answer that is nothing but a call
object (or a list of them). Only functions that were offered count as calls; anything else stays text.

``tool_choice`` ``required`` or a named function turns into a JSON schema (:func:`forced_call_schema`)
that the runtimes enforce (llama.cpp grammar, onnxruntime-genai guidance), so the answer is exactly one
call object naming an offered function with arguments valid for its parameters.
:class:`ToolCallFilter` lets a stream's plain text through at once while holding back what may be a call.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from slmctl.errors import UsageError

#: (opening marker, closing marker or "" when the call runs to the end of the answer)
MARKERS: tuple[tuple[str, str], ...] = (
    ("<tool_call>", "</tool_call>"),
    ("<|tool_call|>", "<|/tool_call|>"),
    ("[TOOL_CALLS]", ""),
    ("<|python_tag|>", ""),
)
_OPENERS = tuple(opening for opening, _ in MARKERS)


@dataclass(frozen=True)
class ToolCall:
    """One call the model made: an id for the answer to refer to, the function and its arguments."""

    id: str
    name: str
    arguments: dict[str, Any]

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.arguments, ensure_ascii=False)


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def function_of(tool: dict[str, Any]) -> dict[str, Any]:
    """The function description of a tool (OpenAI and Ollama nest it under ``function``)."""
    return tool.get("function", tool) if isinstance(tool, dict) else {}


def tool_names(tools: Sequence[dict[str, Any]]) -> list[str]:
    return [str(function_of(t).get("name")) for t in tools if function_of(t).get("name")]


def forced_call_schema(tools: Sequence[dict[str, Any]], name: str | None) -> dict[str, Any]:
    """The JSON schema of one call to ``name`` (or, ``None``, to any of ``tools``)."""
    offered = {str(function_of(t).get("name")): function_of(t) for t in tools}
    if name is not None and name not in offered:
        raise UsageError(f"tool_choice names function '{name}', which is not among the tools",
                         f"offer it in tools, or choose one of: {', '.join(offered) or '(none)'}")
    if not offered:
        raise UsageError("tool_choice requires a tool call, but no tools were given", "add tools, or drop tool_choice")

    definitions: dict[str, Any] = {}

    def call(function: dict[str, Any]) -> dict[str, Any]:
        parameters = _hoist_definitions(function.get("parameters") or {"type": "object", "properties": {}},
                                        function["name"], definitions)
        return {"type": "object", "properties": {"name": {"const": function["name"]}, "arguments": parameters},
                "required": ["name", "arguments"], "additionalProperties": False}

    chosen = [call(offered[name])] if name is not None else [call(f) for f in offered.values()]
    schema = chosen[0] if len(chosen) == 1 else {"anyOf": chosen}
    return {**schema, "$defs": definitions} if definitions else schema


def _hoist_definitions(parameters: dict[str, Any], prefix: str, into: dict[str, Any]) -> dict[str, Any]:
    """``parameters`` with its ``$defs``/``definitions`` moved into ``into`` (renamed ``prefix.name``, so
    two tools cannot clash) and its local ``$ref``s pointed at them: nested under a call object, the
    references would otherwise no longer resolve."""
    local = {**parameters.get("definitions", {}), **parameters.get("$defs", {})}
    if not local:
        return parameters
    renamed = {f"#/{kind}/{key}": f"#/$defs/{prefix}.{key}" for kind in ("$defs", "definitions") for key in local}

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (renamed.get(v, v) if k == "$ref" and isinstance(v, str) else rewrite(v))
                    for k, v in node.items() if k not in ("$defs", "definitions") or node is not parameters}
        if isinstance(node, list):
            return [rewrite(item) for item in node]
        return node

    for key, value in local.items():
        into[f"{prefix}.{key}"] = rewrite(value)
    return rewrite(parameters)


def _call_objects(value: Any) -> list[dict[str, Any]] | None:
    """The call objects in a decoded JSON value (an object or a list of them), else None."""
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    calls = []
    for item in items:
        body = item.get("function", item) if isinstance(item.get("function"), dict) else item
        name = body.get("name")
        arguments = body.get("arguments", body.get("parameters", {}))
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                return None
        if not isinstance(name, str) or not isinstance(arguments, dict):
            return None
        calls.append({"name": name, "arguments": arguments})
    return calls


def _decode_values(text: str) -> list[Any] | None:
    """Every JSON value in ``text`` (whitespace, commas or newlines between them), else None."""
    decoder = json.JSONDecoder()
    values, index = [], 0
    while True:
        while index < len(text) and text[index] in " \t\r\n,;":
            index += 1
        if index >= len(text):
            return values
        try:
            value, index = decoder.raw_decode(text, index)
        except json.JSONDecodeError:
            return None
        values.append(value)


def parse_tool_calls(text: str, offered: Sequence[str]) -> tuple[str, list[ToolCall]]:
    """Split a finished answer into its text and the calls it makes to ``offered`` functions.
    Text that only looks like a call (unknown function, broken JSON) stays text."""
    allowed = set(offered)
    found: list[dict[str, Any]] = []
    content = text
    for opening, closing in MARKERS:
        if opening not in text:
            continue
        head, _, rest = text.partition(opening)
        pattern = re.escape(opening) + r"(.*?)" + (re.escape(closing) if closing else r"\Z")
        bodies = re.findall(pattern, opening + rest, flags=re.S)
        calls = [c for body in bodies for c in (_call_objects_in(body) or [])]
        if calls and len(bodies) >= 1:
            found, content = calls, head
            break
    if not found:
        stripped = text.strip()
        if stripped[:1] in ("{", "["):
            values = _decode_values(stripped)
            calls = [c for v in values or [] for c in (_call_objects(v) or [])] if values else []
            if calls and len(calls) >= len(values or []):
                found, content = calls, ""
    if not found or any(c["name"] not in allowed for c in found):
        return text, []
    return content.strip(), [ToolCall(new_call_id(), c["name"], c["arguments"]) for c in found]


def _call_objects_in(body: str) -> list[dict[str, Any]] | None:
    values = _decode_values(body.strip())
    if not values:
        return None
    calls = [c for v in values for c in (_call_objects(v) or [])]
    return calls or None


class ToolCallFilter:
    """Streamed text in, text safe to show out: what may be a tool call is held until the answer ends.

    An answer that starts with ``{`` or ``[`` (after blanks) is held whole; elsewhere, text from a call
    marker on is held (and any tail that may be the start of one). :meth:`finish` returns the held text
    that was not a call, and the calls.
    """

    def __init__(self, offered: Sequence[str]) -> None:
        self._offered = list(offered)
        self._shown = ""
        self._held = ""
        self._holding_all = False

    def feed(self, piece: str) -> str:
        if self._holding_all:
            self._held += piece
            return ""
        text = self._held + piece
        if not self._shown and not text.strip():
            self._held = text
            return ""
        if not self._shown and text.lstrip()[:1] in ("{", "["):
            self._held, self._holding_all = text, True
            return ""
        cut = min((i for i in (text.find(o) for o in _OPENERS) if i >= 0), default=-1)
        if cut >= 0:
            self._held, self._holding_all = text[cut:], True
            return self._show(text[:cut])
        keep = max((n for o in _OPENERS for n in range(len(o) - 1, 0, -1) if text.endswith(o[:n])), default=0)
        self._held = text[len(text) - keep:] if keep else ""
        return self._show(text[: len(text) - keep])

    def _show(self, text: str) -> str:
        self._shown += text
        return text

    def finish(self) -> tuple[str, list[ToolCall]]:
        """The rest of the text (what was held and is not a call) and the calls found."""
        held, self._held = self._held, ""
        rest, calls = parse_tool_calls(held, self._offered)
        if not calls:
            return held, []
        return (rest if rest.strip() else ""), calls
