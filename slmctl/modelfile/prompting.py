"""Building a prompt with a Modelfile ``TEMPLATE`` (Go text/template subset), for every backend.

A template that uses ``.Messages`` is rendered once over the whole conversation. A legacy template
(``.System`` / ``.Prompt`` / ``.Response``) is rendered once per exchange, as Ollama does; for the last
exchange the output stops where ``.Response`` would go, so the model writes the answer there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from slmctl.backends.base import ChatMessage
from slmctl.modelfile.gotemplate import parse_template

_RESPONSE_MARK = "\x00slmctl-response\x00"


def _data(system: str | None, prompt: str, response: str, messages: list[dict[str, str]]) -> dict[str, Any]:
    return {"System": system or "", "Prompt": prompt, "Response": response, "Suffix": "",
            "Messages": messages, "Tools": None}


def render_prompt(template: str, system: str | None, history: Sequence[ChatMessage], prompt: str) -> str:
    """The full prompt text for ``prompt`` after ``history``, under ``template``."""
    compiled = parse_template(template)
    if compiled.uses_messages:
        messages = [{"Role": "system", "Content": system}] if system else []
        messages += [{"Role": m.role, "Content": m.content} for m in history]
        messages.append({"Role": "user", "Content": prompt})
        return compiled.render(_data(system, prompt, "", messages))
    out: list[str] = []
    pending_user: str | None = None
    for message in history:
        if message.role == "user":
            pending_user = message.content
        elif message.role == "assistant" and pending_user is not None:
            out.append(compiled.render(_data(None if out else system, pending_user, message.content, [])))
            pending_user = None
    last = compiled.render(_data(None if out else system, prompt, _RESPONSE_MARK, []))
    out.append(last.split(_RESPONSE_MARK, 1)[0])
    return "".join(out)
