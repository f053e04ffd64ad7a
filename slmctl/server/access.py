"""Who may call what on ``slmctl serve``, and what a request body asks for (for roles and the audit log).

:class:`Policy` is THE route table: every route is public (health probes, the OpenAPI document, metrics
unless ``--metrics-auth``), for any key (``user``: generate, chat, embed, list, show, ps, version, the
OpenAI routes) or for admin keys only (pull, push, create, copy, delete, blobs, the audit log). A path
the table does not name needs an admin key: a route added later is closed until someone classifies it.

:func:`operation` reads a parsed JSON body: the model it names, the audit event it is (``pull``,
``copy``, ``load`` ...), and whether it needs an admin key although its route does not - an empty prompt
(load), ``keep_alive: 0`` (unload). :func:`answer_text` rebuilds a generated answer from a response
body (JSON, NDJSON or Server-Sent Events), for ``--log-prompts``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from slmctl.units import parse_duration


class Need(IntEnum):
    PUBLIC = 0
    USER = 1
    ADMIN = 2


#: (path, what it needs, its methods): the methods document the route; the path alone decides.
ROUTES: tuple[tuple[str, Need, str], ...] = (
    ("/", Need.PUBLIC, "GET HEAD"),
    ("/api/health", Need.PUBLIC, "GET HEAD"),
    ("/livez", Need.PUBLIC, "GET HEAD"),
    ("/readyz", Need.PUBLIC, "GET HEAD"),
    ("/openapi.json", Need.PUBLIC, "GET HEAD"),
    ("/metrics", Need.PUBLIC, "GET"),
    ("/api/metrics", Need.PUBLIC, "GET"),
    ("/api/version", Need.USER, "GET"),
    ("/api/tags", Need.USER, "GET"),
    ("/api/show", Need.USER, "POST"),
    ("/api/ps", Need.USER, "GET"),
    ("/api/generate", Need.USER, "POST"),
    ("/api/chat", Need.USER, "POST"),
    ("/api/embed", Need.USER, "POST"),
    ("/api/embeddings", Need.USER, "POST"),
    ("/v1/chat/completions", Need.USER, "POST"),
    ("/v1/completions", Need.USER, "POST"),
    ("/v1/embeddings", Need.USER, "POST"),
    ("/v1/models", Need.USER, "GET"),
    ("/v1/models/{model:path}", Need.USER, "GET"),
    ("/api/pull", Need.ADMIN, "POST"),
    ("/api/push", Need.ADMIN, "POST"),
    ("/api/create", Need.ADMIN, "POST"),
    ("/api/copy", Need.ADMIN, "POST"),
    ("/api/delete", Need.ADMIN, "DELETE"),
    ("/api/blobs/{digest}", Need.ADMIN, "HEAD POST"),
    ("/api/audit", Need.ADMIN, "GET"),
)
METRICS = ("/metrics", "/api/metrics")
#: Routes whose JSON body says what the request does (the model, a load or an unload).
OPERATION_PATHS = frozenset({"/api/generate", "/api/chat", "/api/embed", "/api/embeddings", "/api/pull",
                             "/api/push", "/api/create", "/api/copy", "/api/delete"})
#: Routes that generate or embed from a prompt (their bodies are read for ``--log-prompts``).
PROMPT_PATHS = frozenset({"/api/generate", "/api/chat", "/api/embed", "/api/embeddings",
                          "/v1/chat/completions", "/v1/completions", "/v1/embeddings"})


def _pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    regex = "".join((".+" if p.endswith(":path}") else "[^/]+") if p.startswith("{") else re.escape(p)
                    for p in parts)
    return re.compile(f"^{regex}$")


class Policy:
    def __init__(self, *, metrics_auth: bool = False) -> None:
        self._rules = [(_pattern(path), Need.USER if metrics_auth and path in METRICS else need)
                       for path, need, _ in ROUTES]

    def rule(self, path: str) -> Need | None:
        """What the table says of ``path`` (None: it does not name it)."""
        if path != "/":
            path = path.rstrip("/") or "/"
        for pattern, need in self._rules:
            if pattern.match(path):
                return need
        return None

    def need(self, method: str, path: str) -> Need:
        if method == "OPTIONS":
            return Need.PUBLIC  # CORS preflights carry no credentials; no route acts on OPTIONS
        found = self.rule(path)
        return Need.ADMIN if found is None else found


@dataclass(frozen=True)
class Operation:
    """What a request does, as far as access and the audit log care."""

    event: str | None = None  # the audit event (None: not audited)
    model: str | None = None
    admin: bool = False  # needs an admin key whatever its route needs
    what: str = ""  # for the 403 message: "loading or unloading a model"
    extra: dict[str, Any] = field(default_factory=dict)
    prompt: Any = None  # the request's prompt, messages or input (kept only under --log-prompts)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _unloads(body: dict[str, Any]) -> bool:
    value = body.get("keep_alive")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or value == "":
        return False  # absent, or of a wrong type (the route answers 400)
    try:
        return parse_duration(value) == 0
    except ValueError:
        return False  # the route answers 400


def operation(method: str, path: str, body: Any) -> Operation:
    """What the (parsed JSON) ``body`` sent to ``path`` asks for."""
    if path.startswith("/api/blobs/"):
        return Operation("blob", extra={"digest": path.rsplit("/", 1)[-1]}) if method == "POST" else Operation()
    if not isinstance(body, dict):
        return Operation()
    model = _text(body.get("model")) or _text(body.get("name"))
    if path in ("/api/pull", "/api/push", "/api/delete"):
        return Operation(path.rsplit("/", 1)[-1], model)
    if path == "/api/create":
        return Operation("create", model, extra={"from": _text(body.get("from"))})
    if path == "/api/copy":
        return Operation("copy", _text(body.get("source")), extra={"destination": _text(body.get("destination"))})
    prompt_field = {"/api/generate": "prompt", "/api/chat": "messages", "/api/embed": "input",
                    "/api/embeddings": "prompt", "/v1/chat/completions": "messages", "/v1/completions": "prompt",
                    "/v1/embeddings": "input"}.get(path)
    if prompt_field is None:
        return Operation(model=model)
    prompt = body.get(prompt_field)
    if path == "/api/generate":
        prompt = {k: body[k] for k in ("system", "prompt", "suffix") if body.get(k)} or None
    if path.startswith("/api/"):
        empty = not prompt or prompt == [""]
        if empty or _unloads(body):
            event = "unload" if _unloads(body) else "load"
            return Operation(event, model, admin=True, what="loading or unloading a model", prompt=prompt)
    return Operation("generate", model, prompt=prompt)


def answer_text(content_type: str, body: bytes) -> Any:
    """The generated text in a response body: a string, a list (one per choice), or None."""
    texts: dict[int, list[str]] = {}

    def add(obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        if isinstance(obj.get("response"), str):
            texts.setdefault(0, []).append(obj["response"])
        message = obj.get("message")
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            texts.setdefault(0, []).append(message["content"])
        for choice in obj.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            piece = choice.get("text")
            for holder in (choice.get("message"), choice.get("delta")):
                if isinstance(holder, dict) and isinstance(holder.get("content"), str):
                    piece = holder["content"]
            if isinstance(piece, str):
                texts.setdefault(int(choice.get("index") or 0), []).append(piece)

    text = body.decode("utf-8", errors="replace")
    if "event-stream" in content_type:
        lines = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
    elif "ndjson" in content_type:
        lines = text.splitlines()
    else:
        lines = [text]
    for line in lines:
        try:
            add(json.loads(line))
        except ValueError:
            continue
    if not texts:
        return None
    joined = ["".join(texts[i]) for i in sorted(texts)]
    return joined[0] if len(joined) == 1 else joined
