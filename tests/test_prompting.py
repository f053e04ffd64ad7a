"""Prompts built with a Modelfile TEMPLATE: whole-conversation templates and legacy per-turn ones."""

from __future__ import annotations

from slmctl.backends.base import ChatMessage
from slmctl.modelfile.prompting import render_prompt

LEGACY = "{{ if .System }}[SYS]{{ .System }}[/SYS]{{ end }}[U]{{ .Prompt }}[/U]{{ .Response }}</s>"
CHATML = ("{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
          "{{ range .Messages }}{{ if ne .Role \"system\" }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
          "{{ end }}{{ end }}<|im_start|>assistant\n")
HISTORY = [ChatMessage("user", "hi"), ChatMessage("assistant", "hello")]


def test_legacy_template_renders_each_exchange_and_stops_at_the_response() -> None:
    assert render_prompt(LEGACY, "be kind", [], "why?") == "[SYS]be kind[/SYS][U]why?[/U]"
    assert render_prompt(LEGACY, "be kind", HISTORY, "why?") == (
        "[SYS]be kind[/SYS][U]hi[/U]hello</s>[U]why?[/U]")


def test_messages_template_sees_the_whole_conversation() -> None:
    assert render_prompt(CHATML, "be kind", HISTORY, "why?") == (
        "<|im_start|>system\nbe kind<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\nhello<|im_end|>\n<|im_start|>user\nwhy?<|im_end|>\n<|im_start|>assistant\n")


def test_seed_template_without_system() -> None:
    seed = "{{ .System }}\nUser: {{ .Prompt }}\nAssistant: "
    assert render_prompt(seed, None, [], "hello") == "\nUser: hello\nAssistant: "
