"""Prompts built from Modelfile TEMPLATEs the way Ollama builds them (``render_messages``).

The templates are small ones written for these tests, each exercising what Ollama's bundled templates
rely on: ``break``/``continue``, several system messages (``.System`` joins them all), legacy
``.Prompt``/``.Response`` templates rendered exchange by exchange with their system messages, ``.Messages``
with ``.System``, whitespace trimming, ``.Tools``/``.ToolCalls`` and fill-in-the-middle. The expected
prompts were worked out by hand from Ollama's rules (``template.Execute``). Checking Ollama's own 20
templates against its expected prompts needs its test data: ``tests/tools/check_ollama_templates.py``.
"""

from __future__ import annotations

import pytest

from slmctl.backends.base import ChatMessage
from slmctl.modelfile.gotemplate import TemplateError
from slmctl.modelfile.prompting import render_messages, render_prompt

S, U, A, T = "system", "user", "assistant", "tool"


def conv(*turns: tuple[str, str]) -> list[ChatMessage]:
    return [ChatMessage(role, content) for role, content in turns]  # type: ignore[arg-type]


CHAT = conv((S, "Be brief."), (U, "Hi"), (A, "Hello!"), (U, "Bye"))
SPLIT_SYSTEM = conv((S, "A"), (U, "Q1"), (S, "B"), (U, "Q2"))
TWO_SYSTEMS = conv((S, "A"), (S, "B"), (U, "Q"))

# .System on top; system messages skipped in the range with continue; trim markers everywhere.
SYSTEM_ON_TOP = """{{- if .System }}[S]{{ .System }}[/S]
{{ end }}
{{- range .Messages }}
{{- if eq .Role "system" }}{{ continue }}{{ end -}}
[{{ .Role }}]{{ .Content }}
{{ end }}[assistant]"""

# System messages folded into the next user turn (continue), the conversation cut at a tool message (break).
FOLDED = """{{- $system := "" }}
{{- range .Messages }}
{{- if eq .Role "system" }}
{{- $system = printf "%s%s;" $system .Content }}
{{- continue }}
{{- else if eq .Role "tool" }}
{{- break }}
{{- end }}
<{{ .Role }}>{{ if $system }}({{ $system }}) {{ $system = "" }}{{ end }}{{ .Content }}
{{- end }}
<assistant>"""

# A legacy template: one exchange at a time.
LEGACY = "{{ if .System }}<<{{ .System }}>> {{ end }}Q: {{ .Prompt }}\nA: {{ .Response }}\n"


@pytest.mark.parametrize(("messages", "expected"), [
    (CHAT, "[S]Be brief.[/S]\n[user]Hi\n[assistant]Hello!\n[user]Bye\n[assistant]"),
    (SPLIT_SYSTEM, "[S]A\n\nB[/S]\n[user]Q1\n[user]Q2\n[assistant]"),
    (TWO_SYSTEMS, "[S]A\n\nB[/S]\n[user]Q\n[assistant]"),
    (conv((U, "Hi")), "[user]Hi\n[assistant]"),
])
def test_system_is_every_system_message_joined_by_a_blank_line(messages: list[ChatMessage], expected: str) -> None:
    assert render_messages(SYSTEM_ON_TOP, messages) == expected


@pytest.mark.parametrize(("messages", "expected"), [
    (CHAT, "\n<user>(Be brief.;) Hi\n<assistant>Hello!\n<user>Bye\n<assistant>"),
    (SPLIT_SYSTEM, "\n<user>(A;) Q1\n<user>(B;) Q2\n<assistant>"),
    (TWO_SYSTEMS, "\n<user>(A\n\nB;) Q\n<assistant>"),  # consecutive system messages are merged first
    (conv((U, "Hi"), (T, "42"), (U, "never")), "\n<user>Hi\n<assistant>"),
])
def test_break_and_continue_in_a_conversation_template(messages: list[ChatMessage], expected: str) -> None:
    assert render_messages(FOLDED, messages) == expected


def test_consecutive_messages_of_a_role_merge_except_tool_messages() -> None:
    messages = conv((S, "A"), (S, "B"), (U, "x"), (U, "y"), (T, "t1"), (T, "t2"), (A, "z"))
    assert render_messages("{{ range .Messages }}<{{ .Role }}>{{ .Content }}{{ end }}", messages) == (
        "<system>A\n\nB<user>x\n\ny<tool>t1<tool>t2<assistant>z")


def test_trim_markers_remove_the_white_space_beside_them() -> None:
    template = "{{- range .Messages }}\n  {{- .Role }}:  {{ .Content -}}  \n{{ end -}}\n\n  >"
    assert render_messages(template, conv((U, "Hi"), (A, "Yo"))) == "user:  Hiassistant:  Yo>"


@pytest.mark.parametrize(("messages", "expected"), [
    (CHAT, "<<Be brief.>> Q: Hi\nA: Hello!\nQ: Bye\nA: "),
    (SPLIT_SYSTEM, "<<A>> Q: Q1\nA: \n<<B>> Q: Q2\nA: "),  # a system message starts a new exchange
    (TWO_SYSTEMS, "<<A\n\nB>> Q: Q\nA: "),
    (conv((U, "Hi"), (A, "Hello"), (S, "S2"), (U, "Bye")), "Q: Hi\nA: Hello\n<<S2>> Q: Bye\nA: "),
    (conv((U, "Hi"), (U, "there")), "Q: Hi\n\nthere\nA: "),
    (conv((U, "Hi"), (A, "Hel")), "Q: Hi\nA: Hel"),  # a last assistant message is continued
])
def test_legacy_templates_render_exchange_by_exchange(messages: list[ChatMessage], expected: str) -> None:
    assert render_messages(LEGACY, messages) == expected


def test_legacy_template_without_response_gets_it_appended() -> None:
    assert render_messages("{{ .System }}|{{ .Prompt }}|", CHAT) == "Be brief.|Hi|Hello!|Bye|"


def test_render_prompt_puts_the_system_prompt_first_and_the_prompt_last() -> None:
    history = conv((U, "Hi"), (A, "Hello!"))
    assert render_prompt(LEGACY, "Be brief.", history, "Bye") == render_messages(LEGACY, CHAT)
    assert render_prompt(SYSTEM_ON_TOP, None, history, "Bye") == (
        "[user]Hi\n[assistant]Hello!\n[user]Bye\n[assistant]")


TOOLS = [{"type": "function", "function": {
    "name": "add", "description": "a < b & c",
    "parameters": {"type": "object", "required": ["a", "b"],
                   "properties": {"b": {"type": "integer"}, "a": {"type": ["integer", "null"], "description": "first"}}},
}}]
TOOL_TEMPLATE = """{{- if .Tools }}Tools: {{ .Tools }}
{{ range .Tools }}{{ range $name, $p := .Function.Parameters.Properties }}{{ $name }}: {{ $p.Type }} / {{ toTypeScriptType $p }}
{{ end }}{{ end }}
{{- end }}
{{- range .Messages }}
{{- if .ToolCalls }}{{ range .ToolCalls }}call {{ .Function.Name }}({{ .Function.Arguments }}) {{ json .Function.Arguments }}
{{ end }}
{{- else }}{{ .Role }}: {{ .Content }}
{{ end }}
{{- end }}"""


def test_tools_and_tool_calls_print_as_ollama_prints_them() -> None:
    call = {"function": {"name": "add", "arguments": {"b": 2, "a": 1.0}}}
    messages = [ChatMessage("user", "1+2?"), ChatMessage("assistant", "", tool_calls=(call,)),
                ChatMessage("tool", "3")]  # type: ignore[arg-type]
    assert render_messages(TOOL_TEMPLATE, messages, tools=TOOLS) == (
        'Tools: [{"type":"function","function":{"name":"add","description":"a \\u003c b \\u0026 c",'
        '"parameters":{"type":"object","required":["a","b"],"properties":{"a":{"type":["integer","null"],'
        '"description":"first"},"b":{"type":"integer"}}}}}]\n'
        "a: [integer null] / number | null\n"
        "b: integer / number\n"
        'user: 1+2?\ncall add({"a":1,"b":2}) {"a":1,"b":2}\ntool: 3\n')
    assert render_messages(TOOL_TEMPLATE, [{"role": "user", "content": "hi"}]) == "user: hi\n"


def test_messages_may_be_any_objects_with_role_and_content() -> None:
    class Message:
        def __init__(self, role: str, content: str) -> None:
            self.role, self.content = role, content

    template = "{{ range .Messages }}{{ .Role }}={{ .Content }};{{ end }}"
    assert render_messages(template, [Message("user", "a"), {"role": "assistant", "content": "b"}]) == (
        "user=a;assistant=b;")


def test_suffix_renders_prompt_and_suffix_only() -> None:
    template = "{{ if .Suffix }}<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>{{ else }}{{ .System }}{{ .Prompt }}{{ end }}"
    messages = conv((S, "ignored"), (U, "def add("))
    assert render_messages(template, messages, suffix="return x") == "<PRE> def add( <SUF>return x <MID>"
    assert render_messages(template, messages) == "ignoreddef add("


def test_break_outside_a_range_is_refused() -> None:
    with pytest.raises(TemplateError, match="outside of a range block"):
        render_messages("{{ if .System }}{{ break }}{{ end }}", CHAT)
