"""Errors at the HTTP edge: the exception hierarchy's ``http_status`` in each API's error shape.

Ollama's shape is ``{"error": "message"}``; under ``/v1`` it is OpenAI's ``{"error": {"message", "type",
"param", "code"}}``, with the codes OpenAI's SDKs know (``model_not_found``, ``context_length_exceeded``).
A body that is not JSON, or a field of the wrong type, is a 400 (never FastAPI's 422); a full queue is a
503 with ``Retry-After``; anything unexpected is a 500 with the cause logged. A body over the size limit
is refused with 413 before it is read.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from slmctl.errors import ContextOverflow, ModelNotFound, ServerBusy, SlmctlError
from slmctl.server.streaming import error_message

log = logging.getLogger("slmctl.server")


#: OpenAI's error ``type`` for a status (what its SDKs show beside the message).
_OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


def validation_field(errors: list[dict[str, Any]]) -> str | None:
    """The dotted path of the first bad field (None: the body as a whole)."""
    if not errors or errors[0].get("type") == "json_invalid":
        return None
    loc = [str(p) for p in errors[0].get("loc", ())
           if p != "body" and re.fullmatch(r"[A-Za-z_][\w-]*|\d+", str(p))]
    return ".".join(loc) or None


def validation_message(errors: list[dict[str, Any]]) -> str:
    """One line naming the first bad field and what is wrong with it."""
    if not errors:
        return "invalid request"
    first = errors[0]
    if first.get("type") == "json_invalid":
        return f"invalid JSON in the request body: {first.get('ctx', {}).get('error', first.get('msg'))}"
    where = validation_field(errors) or "body"
    if first.get("type") == "missing":
        return f"missing field '{where}'"
    return f"invalid value for '{where}': {str(first.get('msg')).removeprefix('Value error, ')}"


def is_openai(path: str) -> bool:
    return path == "/v1" or path.startswith("/v1/")


def error_response(status: int, message: str, headers: dict[str, str] | None = None, *, path: str = "",
                   code: str | None = None, param: str | None = None) -> Any:
    """The error body of the API ``path`` belongs to (OpenAI's under /v1, else Ollama's)."""
    from fastapi.responses import JSONResponse

    if is_openai(path):
        from slmctl.wire.openai import error_object

        kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        return JSONResponse(error_object(message, kind, code, param), status_code=status, headers=headers)
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def error_code(error: BaseException) -> str | None:
    """OpenAI's machine-readable ``code`` for an error."""
    if isinstance(error, ContextOverflow):
        return "context_length_exceeded"
    if isinstance(error, ModelNotFound):
        return "model_not_found"
    if isinstance(error, ServerBusy):
        return "server_busy"
    return None


def response_for(error: BaseException, path: str = "") -> Any:
    """The HTTP answer for ``error`` (used by the handlers and by routes that catch before streaming)."""
    if isinstance(error, SlmctlError):
        headers = {"Retry-After": str(error.retry_after)} if isinstance(error, ServerBusy) else None
        if error.http_status >= 500:
            log.error("%s: %s", type(error).__name__, error.message)
        return error_response(error.http_status, error_message(error), headers, path=path, code=error_code(error))
    log.error("unexpected error", exc_info=error)
    return error_response(500, error_message(error), path=path)


def install(app: Any) -> None:
    """Register the handlers on a FastAPI app."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    @app.exception_handler(SlmctlError)
    async def _slmctl(request: Any, error: SlmctlError) -> Any:
        return response_for(error, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Any, error: RequestValidationError) -> Any:
        problems = list(error.errors())
        return error_response(400, validation_message(problems), path=request.url.path,
                              code="invalid_value" if validation_field(problems) else None,
                              param=validation_field(problems))

    @app.exception_handler(HTTPException)
    async def _http(request: Any, error: HTTPException) -> Any:
        message = {404: "not found", 405: "method not allowed"}.get(error.status_code, str(error.detail))
        return error_response(error.status_code, message, getattr(error, "headers", None), path=request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Any, error: Exception) -> Any:
        return response_for(error, request.url.path)


class BodyLimit:
    """ASGI middleware: refuse bodies over ``limit`` bytes with 413 (``exempt`` path prefixes aside)."""

    def __init__(self, app: Any, limit: int, exempt: tuple[str, ...] = ()) -> None:
        self.app, self.limit, self.exempt = app, limit, exempt

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._refuse(scope, receive, send)
            return
        body = bytearray()  # read first (at most ``limit`` bytes), then replay to the app
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            body += message.get("body", b"")
            if len(body) > self.limit:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body"):
                break
        await self.app(scope, _replay([{"type": "http.request", "body": bytes(body), "more_body": False}], receive),
                       send)

    async def _refuse(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        response = error_response(413, f"the request body is over the limit of {self.limit} bytes",
                                  path=scope["path"], code="request_too_large")
        await response(scope, receive, send)


def _replay(messages: list[dict[str, Any]], then: Any = None) -> Any:
    """An ASGI ``receive`` that hands out ``messages`` first, then defers to ``then``."""
    pending = list(messages)

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        if then is None:
            return {"type": "http.disconnect"}
        return await then()

    return receive


class AssumeJson:
    """ASGI middleware: Ollama reads every API body as JSON whatever its Content-Type (``curl -d`` sends
    ``application/x-www-form-urlencoded``); so do we, for paths under ``prefix``."""

    def __init__(self, app: Any, prefix: str = "/api/", exempt: tuple[str, ...] = ("/api/blobs/",)) -> None:
        self.app, self.prefix, self.exempt = app, prefix, exempt

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix) \
                and not scope["path"].startswith(self.exempt):
            headers = [(k, v) for k, v in scope.get("headers") or [] if k != b"content-type"]
            scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        await self.app(scope, receive, send)
