"""Building a prompt with a Modelfile ``TEMPLATE`` (Go text/template subset), as Ollama does, for every backend.

:func:`render_messages` renders a whole conversation (system messages included) into the text the
model reads; the template itself opens the assistant turn. It follows Ollama's ``template.Execute``:

- Ollama's touch-up first: a template that names neither ``.Messages`` nor ``.Response`` (field or
  variable names, in any case) gets ``{{ .Response }}`` appended.
- The messages are collated: consecutive messages of one role (``tool`` excepted) merge into one,
  their contents joined by a blank line (``"\\n\\n"``); ``.System`` is the contents of *every* system
  message, in order, joined the same way.
- With a ``suffix`` and a last user message (fill-in-the-middle): one rendering with ``.Prompt`` (that
  message), ``.Suffix`` and an empty ``.Response``; nothing else.
- A template that names ``.Messages`` is rendered once, with ``.System``, ``.Messages`` (the collated
  messages: ``.Role``, ``.Content``, ``.Thinking``, ``.ToolCalls``, ``.ToolName``, ``.ToolCallID``),
  ``.Tools`` and an empty ``.Response``.
- Any other (legacy) template is rendered once per exchange with ``.System``, ``.Prompt`` and
  ``.Response``: a system message starts a new exchange when a prompt or response is pending, a user
  message when a response is; ``tool`` messages are left out. The last exchange is rendered with the
  template cut right after its first ``.Response`` (empty, or the text of a last assistant message to
  continue), so the model writes the answer there.

:func:`check_template` is what ``create`` runs: it compiles a template and refuses a field these
values cannot have (``{{ .Sytem }}`` would print nothing), naming its position and the closest valid
name; :data:`TEMPLATE_VALUES` describes the values (their types are derived from the structs below).

The values are Go's: ``.Tools`` (``.Function.Name``, ``.Function.Description``,
``.Function.Parameters.Properties``, ...) and ``.ToolCalls`` (``.Function.Name``,
``.Function.Arguments``) print as Ollama prints them: tools, arguments and properties as JSON (map
keys sorted), other structs as Go's ``fmt`` does (``{a b}``). The ``think`` values are false/empty.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from slmctl.modelfile.gotemplate import Template, parse_template
from slmctl.modelfile.gotemplate_check import ANY, BOOL, INT, STRING, ListOf, MapOf, Struct, Type
from slmctl.modelfile.gotemplate_funcs import format_value, go_json, json_string

__all__ = ["TEMPLATE_VALUES", "check_template", "render_messages", "render_prompt"]

_THINK = {"Think": False, "ThinkLevel": "", "IsThinkSet": False}


def render_messages(template: str, messages: Sequence[Any], *, tools: list[dict[str, Any]] | None = None,
                    suffix: str = "") -> str:
    """The prompt for ``messages`` (the whole conversation: a :class:`~slmctl.backends.base.ChatMessage`,
    or any object or mapping with ``role``, ``content`` and optionally ``tool_calls``, ``thinking``,
    ``tool_name``, ``tool_call_id``) under ``template``. ``tools`` are Ollama/OpenAI tool definitions
    (``{"type": "function", "function": {"name", "description", "parameters"}}``); a ``suffix`` asks
    for fill-in-the-middle of the last user message. Raises :class:`TemplateError`."""
    compiled = parse_template(template)
    if not {"messages", "response"} & compiled.identifiers:
        compiled = compiled.with_response()
    converted = [_message(m) for m in messages]
    if suffix and converted and converted[-1].Role == "user" and converted[-1].Content:
        return compiled.render({"Prompt": converted[-1].Content, "Suffix": suffix, "Response": "", **_THINK})
    system, collated = _collate(converted)
    if "messages" in compiled.identifiers:
        return compiled.render({"System": system, "Messages": collated, "Tools": _tools(tools),
                                "Response": "", **_THINK})
    return _render_exchanges(compiled, collated)


def render_prompt(template: str, system: str | None, history: Sequence[Any], prompt: str) -> str:
    """The full prompt text for ``prompt`` after ``history`` (messages as :func:`render_messages` takes
    them), under ``template``: the conversation ``system`` (when given), ``history``, then ``prompt`` as a
    user message, as Ollama's generate builds it."""
    messages: list[Any] = [{"role": "system", "content": system}] if system else []
    return render_messages(template, [*messages, *history, {"role": "user", "content": prompt}])


def _collate(messages: list[_Message]) -> tuple[str, list[_Message]]:
    system = [m.Content for m in messages if m.Role == "system"]
    collated: list[_Message] = []
    for message in messages:
        if collated and collated[-1].Role == message.Role and message.Role != "tool":
            collated[-1].Content += "\n\n" + message.Content
        else:
            collated.append(message)
    return "\n\n".join(system), collated


def _render_exchanges(compiled: Template, messages: list[_Message]) -> str:
    out: list[str] = []
    exchange = {"System": "", "Prompt": "", "Response": ""}

    def flush() -> None:
        out.append(compiled.render({**exchange, **_THINK}))
        exchange.update(System="", Prompt="", Response="")

    for message in messages:
        if message.Role == "system":
            if exchange["Prompt"] or exchange["Response"]:
                flush()
            exchange["System"] = message.Content
        elif message.Role == "user":
            if exchange["Response"]:
                flush()
            exchange["Prompt"] = message.Content
        elif message.Role == "assistant":
            exchange["Response"] = message.Content
    out.append(compiled.cut_at_response().render({**exchange, **_THINK}))
    return "".join(out)


# --- Go values ------------------------------------------------------------------------------------

def _empty(value: Any) -> bool:
    """Go's ``omitempty`` test."""
    if value is None or value is False:
        return True
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value == 0
    return isinstance(value, (str, list, tuple, Mapping)) and len(value) == 0


class _Struct:
    """A Go struct: its fields are attributes; ``fmt`` prints it ``{a b}`` (``&{a b}`` through a
    pointer), ``json`` marshals it by its field tags. ``FIELDS``: (name, json key or "" for the
    name, omitempty, how ``fmt`` prints the field when it is nil)."""

    __slots__ = ()
    FIELDS: ClassVar[tuple[tuple[str, str, bool, str], ...]] = ()
    POINTER: ClassVar[bool] = False

    def __init__(self, *values: Any) -> None:
        for (name, *_), value in zip(self.FIELDS, values, strict=True):
            setattr(self, name, value)

    def go_string(self) -> str:
        parts = [nil if (v := getattr(self, name)) is None else format_value(v) for name, _, _, nil in self.FIELDS]
        return ("&{" if self.POINTER else "{") + " ".join(parts) + "}"

    def go_json(self) -> str:
        parts = [f"{json_string(key or name)}:{go_json(getattr(self, name))}" for name, key, omit, _ in self.FIELDS
                 if not (omit and _empty(getattr(self, name)))]
        return "{" + ",".join(parts) + "}"


def _struct(name: str, spec: str, *, pointer: bool = False, stringer: bool = False) -> type[_Struct]:
    """A :class:`_Struct` from ``"Field:key,omitempty:nil Field2 ..."`` (key, omitempty and nil optional)."""
    fields = []
    for item in spec.split():
        field, _, rest = item.partition(":")
        tag, _, nil = rest.partition(":")
        key, _, omit = tag.partition(",")
        fields.append((field, key, omit == "omitempty", nil))
    body: dict[str, Any] = {"__slots__": tuple(f[0] for f in fields), "FIELDS": tuple(fields), "POINTER": pointer}
    if stringer:
        body["go_string"] = _Struct.go_json
    return type(name, (_Struct,), body)


class _JSONMap(dict):  # type: ignore[type-arg]
    """A Go map with a ``String()`` that writes JSON (Ollama's tool-call arguments and properties);
    ``nil`` prints ``{}`` and marshals to ``null``. ``ordered`` keeps insertion order in JSON."""

    __slots__ = ("nil", "ordered")

    def __init__(self, items: Mapping[str, Any] | None, ordered: bool = False) -> None:
        super().__init__(items or {})
        self.nil, self.ordered = items is None, ordered

    def go_string(self) -> str:
        return "{}" if self.nil else self.go_json()

    def go_json(self) -> str:
        if self.nil:
            return "null"
        if self.ordered:
            return "{" + ",".join(f"{json_string(str(k))}:{go_json(v)}" for k, v in self.items()) + "}"
        return go_json(dict(self))


class _JSONList(list):  # type: ignore[type-arg]
    """A Go slice with a ``String()`` that writes JSON (Ollama's ``.Tools``); ``nil`` is ``null``."""

    __slots__ = ("nil",)

    def __init__(self, items: Sequence[Any] | None) -> None:
        super().__init__(items or [])
        self.nil = items is None

    def go_string(self) -> str:
        return self.go_json()

    def go_json(self) -> str:
        return "null" if self.nil else "[" + ",".join(go_json(v) for v in self) + "]"


class _PropertyType(list):  # type: ignore[type-arg]
    """Ollama's ``PropertyType``: one JSON type name or several."""

    __slots__ = ()

    def go_string(self) -> str:
        return "" if not self else self[0] if len(self) == 1 else "[" + " ".join(self) + "]"

    def go_json(self) -> str:
        return json_string(self[0]) if len(self) == 1 else go_json(list(self) or None)


_TS_TYPES = {"string": "string", "number": "number", "integer": "number", "boolean": "boolean",
             "array": "any[]", "object": "Record<string, any>", "null": "null"}

_Message = _struct("_Message", "Role Content Thinking Images::[] ToolCalls::[] ToolName ToolCallID", pointer=True)
_ToolCall = _struct("_ToolCall", "ID Function")
_ToolCallFunction = _struct("_ToolCallFunction", "Index Name Arguments")
_Tool = _struct("_Tool", "Type:type Items:items,omitempty:<nil> Function:function", stringer=True)
_ToolFunction = _struct("_ToolFunction", "Name:name Description:description Parameters:parameters")
_ToolParameters = _struct("_ToolParameters", "Type:type Defs:$defs,omitempty:<nil> Items:items,omitempty:<nil> "
                                             "Required:required,omitempty:[] Properties:properties")
_ToolPropertyBase = _struct("_ToolPropertyBase", "AnyOf:anyOf,omitempty:[] Type:type,omitempty "
                                                 "Items:items,omitempty:<nil> Description:description,omitempty "
                                                 "Enum:enum,omitempty:[] Properties:properties,omitempty:<nil> "
                                                 "Required:required,omitempty:[]")


class _ToolProperty(_ToolPropertyBase):  # type: ignore[misc,valid-type]
    __slots__ = ()

    def to_typescript_type(self) -> str:
        if self.AnyOf:
            return " | ".join(p.to_typescript_type() for p in self.AnyOf)
        return " | ".join(_TS_TYPES.get(t, "any") for t in self.Type) or "any"


def _schema(name: str, struct: type[_Struct], **types: Type) -> Struct:
    """The check's view of ``struct``: its fields, strings unless ``types`` says otherwise."""
    return Struct(name, {field: types.get(field, STRING) for field, *_ in struct.FIELDS})


_PROPERTY = _schema("ToolProperty", _ToolPropertyBase, Type=ListOf(STRING), Items=ANY, Enum=ListOf(ANY),
                    Required=ListOf(STRING))
_PROPERTY.fields.update(AnyOf=ListOf(_PROPERTY), Properties=MapOf(_PROPERTY))
_TOOL = _schema("Tool", _Tool, Items=ANY, Function=_schema("ToolFunction", _ToolFunction, Parameters=_schema(
    "ToolFunctionParameters", _ToolParameters, Defs=ANY, Items=ANY, Required=ListOf(STRING),
    Properties=MapOf(_PROPERTY))))
_MESSAGE = _schema("Message", _Message, Images=ListOf(ANY), ToolCalls=ListOf(_schema(
    "ToolCall", _ToolCall, Function=_schema("ToolCallFunction", _ToolCallFunction, Index=INT,
                                            Arguments=MapOf(ANY)))))

#: What a TEMPLATE's dot (and ``$``) holds: every field some rendering of :func:`render_messages` sets.
TEMPLATE_VALUES = Struct("a TEMPLATE", {
    "System": STRING, "Prompt": STRING, "Suffix": STRING, "Response": STRING, "Messages": ListOf(_MESSAGE),
    "Tools": ListOf(_TOOL), **{key: BOOL if isinstance(value, bool) else STRING for key, value in _THINK.items()}})


def check_template(template: str) -> Template:
    """Compile ``template`` and refuse fields :data:`TEMPLATE_VALUES` cannot have; raises :class:`TemplateError`
    (exit code 4) with the position and the closest valid name."""
    compiled = parse_template(template)
    compiled.check(TEMPLATE_VALUES)
    return compiled


def _get(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, Mapping) else getattr(value, key, None)


def _message(m: Any) -> _Message:
    calls = [_tool_call(c) for c in _get(m, "tool_calls") or ()]
    return _Message(str(_get(m, "role") or ""), _get(m, "content") or "", _get(m, "thinking") or "", None,
                    calls or None, _get(m, "tool_name") or _get(m, "name") or "", _get(m, "tool_call_id") or "")


def _tool_call(call: Any) -> _ToolCall:
    function = _get(call, "function") or {}
    arguments = _get(function, "arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else None
        except ValueError:
            arguments = None
    return _ToolCall(_get(call, "id") or "", _ToolCallFunction(
        _get(function, "index") or 0, _get(function, "name") or "",
        _JSONMap(arguments if isinstance(arguments, Mapping) else None)))


def _tools(tools: Sequence[Mapping[str, Any]] | None) -> _JSONList:
    if tools is None:
        return _JSONList(None)
    converted = []
    for tool in tools:
        function = tool.get("function") or {}
        params = function.get("parameters") or {}
        props = params.get("properties")
        converted.append(_Tool(tool.get("type") or "", tool.get("items"), _ToolFunction(
            function.get("name") or "", function.get("description") or "", _ToolParameters(
                params.get("type") or "", params.get("$defs"), params.get("items"), params.get("required"),
                _JSONMap(None if props is None else {k: _property(v) for k, v in props.items()})))))
    return _JSONList(converted)


def _property(spec: Mapping[str, Any]) -> _ToolProperty:
    kind = spec.get("type")
    props = spec.get("properties")
    return _ToolProperty(
        [_property(p) for p in spec["anyOf"]] if spec.get("anyOf") is not None else None,
        _PropertyType([kind] if isinstance(kind, str) else kind or []), spec.get("items"),
        spec.get("description") or "", spec.get("enum"),
        _JSONMap({k: _property(v) for k, v in props.items()}, ordered=True) if props is not None else None,
        spec.get("required"))
