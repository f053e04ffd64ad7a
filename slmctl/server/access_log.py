"""The access log and the request id: one line per request, and the per-request HTTP metrics.

:class:`AccessLog` is the outermost middleware: it gives each request an id (the client's
``X-Request-Id`` when it is a sane token, else a new one), puts it in ``request.state.request_id`` and
echoes it in the response's ``X-Request-Id``, then, once the response has been sent (a stream's whole
body included), logs one line on the ``slmctl.access`` logger and counts the request in the metrics by
its route template (:class:`RecordRoute` finds it: a label with a bounded set of values, whatever paths
clients send; ``other`` when no route matched). Lines are plain text by default; with ``--log-format
json`` every log line of the server is one JSON object (:class:`JsonFormatter`), an access line with its
fields at the top level.
Query strings are never logged (they may carry secrets), nor are bodies or keys; the key's *name* is,
once the auth layer has set ``request.state.key_name``.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from datetime import datetime, timezone
from typing import Any

log = logging.getLogger("slmctl.access")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's ``X-Request-Id`` when it is a short token, else a new random id."""
    given = next((v.decode("latin-1").strip() for k, v in headers if k == b"x-request-id"), "")
    return given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


class RecordRoute:
    """ASGI middleware, innermost: after the router has run, keep the path template of the route it chose
    (``/v1/models/{model:path}``) in the request's state, which every copy of the scope shares."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            route = scope.get("route")
            if scope["type"] == "http" and route is not None and isinstance(scope.get("state"), dict):
                scope["state"]["route"] = str(getattr(route, "path", "other"))


class AccessLog:
    """ASGI middleware: request id, one access-log line, and the request metrics (see the module doc)."""

    def __init__(self, app: Any, metrics: Any = None) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state = scope.setdefault("state", {})
        rid = state["request_id"] = request_id(scope.get("headers") or [])
        sent = {"status": 500, "bytes": 0}

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
                message = {**message, "headers": [*(message.get("headers") or []),
                                                  (b"x-request-id", rid.encode("latin-1"))]}
            elif message["type"] == "http.response.body":
                sent["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            seconds = time.perf_counter() - start
            method = scope["method"] if scope["method"] in _METHODS else "other"
            route = state.get("route", "other")
            if self.metrics is not None:
                self.metrics.request(method, route, sent["status"], seconds)
            fields = access_fields(scope, rid, route, sent["status"], sent["bytes"], seconds)
            log.info(plain_line(fields), extra={"access": fields})


def access_fields(scope: dict[str, Any], rid: str, route: str, status: int, size: int,
                  seconds: float) -> dict[str, Any]:
    client = scope.get("client")
    headers = dict(scope.get("headers") or [])
    state = scope.get("state") or {}
    return {"request_id": rid, "client": client[0] if client else None, "method": scope["method"],
            "path": scope["path"], "route": route, "status": status, "bytes": size,
            "duration_ms": round(seconds * 1000, 1), "key": state.get("key_name"),
            "user_agent": headers.get(b"user-agent", b"").decode("latin-1")[:200] or None}


def plain_line(fields: dict[str, Any]) -> str:
    line = (f'{fields["client"] or "-"} "{fields["method"]} {fields["path"]}" {fields["status"]} '
            f'{fields["bytes"]}B {fields["duration_ms"]}ms id={fields["request_id"]}')
    return line + (f' key={fields["key"]}' if fields["key"] else "")


class JsonFormatter(logging.Formatter):
    """A log record as one JSON object: time, level, logger, message (and an access line's fields)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
            timespec="milliseconds"), "level": record.levelname.lower(), "logger": record.name}
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            out.update(access)
        else:
            out["message"] = record.getMessage()
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure(log_format: str) -> dict[str, Any]:
    """Set the server's log format (after ``logging.basicConfig``); returns uvicorn's logging options:
    its own access log off (this one replaces it), and in JSON its lines through ours."""
    if log_format != "json":
        return {"access_log": False}
    formatter = JsonFormatter()
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    for handler in root.handlers:
        handler.setFormatter(formatter)
    return {"access_log": False, "log_config": None}
