"""What one API request may cost: caps on the tokens it generates and the context it asks for, and a
time limit.

- :func:`cap_options` (called by the serving layer on every request's options): a request asking for more
  than ``--max-predict`` tokens (``num_predict``, OpenAI's ``max_tokens``) or a larger context than
  ``--max-ctx`` (``num_ctx``) is a 400; a request that asks for no limit (``-1``), or asks nothing, gets
  the cap, as does a model whose own defaults are above it. On ``/v1``, where a caller cannot name a
  context, a prompt over the capped context is OpenAI's ``context_length_exceeded``.
- :class:`Timeout`: a generation or embedding request that runs over ``--request-timeout`` is cancelled
  (its generation stops and frees the model) and answered 504; when its stream has already begun, the
  stream ends with an error in its own format (Ollama's last ``{"error": ...}`` line, an SSE error event).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from slmctl.errors import UsageError
from slmctl.options import LoadOptions, SamplingOptions
from slmctl.server.config import ServeConfig
from slmctl.server.errors import error_response, is_openai

#: The routes that run a model (the ones the request timeout applies to).
INFERENCE_PATHS = frozenset({"/api/generate", "/api/chat", "/api/embed", "/api/embeddings",
                             "/v1/chat/completions", "/v1/completions", "/v1/embeddings"})


def cap_options(options: tuple[LoadOptions, SamplingOptions], requested: Mapping[str, Any],
                config: ServeConfig) -> tuple[LoadOptions, SamplingOptions]:
    """``options`` (merged from the model's defaults and ``requested``, the request's own options) within
    ``--max-predict`` and ``--max-ctx``; a request asking for more is a :class:`UsageError` (400)."""
    load, sampling = options
    if config.max_predict is not None:
        cap = config.max_predict
        if "num_predict" in requested and sampling.num_predict > cap:
            raise UsageError(f"the request asks for up to {sampling.num_predict} generated tokens (num_predict, "
                             f"max_tokens) but this server allows at most {cap}",
                             f"ask for {cap} or fewer (the server's --max-predict)")
        if sampling.num_predict < 0 or sampling.num_predict > cap:
            sampling = sampling.model_copy(update={"num_predict": cap})
    if config.max_ctx is not None:
        cap = config.max_ctx
        if "num_ctx" in requested and load.num_ctx > cap:
            raise UsageError(f"the request asks for a context of {load.num_ctx} tokens (num_ctx) but this server "
                             f"allows at most {cap}", f"ask for {cap} or fewer (the server's --max-ctx)")
        if load.num_ctx == 0 or load.num_ctx > cap:
            load = load.model_copy(update={"num_ctx": cap})
    return load, sampling


def stream_error(content_type: str, message: str, path: str) -> bytes:
    """The last piece of a stream that ends in ``message``, in the stream's own format."""
    if content_type.startswith("application/x-ndjson"):
        return (json.dumps({"error": message}) + "\n").encode()
    if content_type.startswith("text/event-stream"):
        body: dict[str, Any] = {"error": {"message": message, "type": "server_error", "param": None,
                                          "code": "timeout"}} if is_openai(path) else {"error": message}
        return f"data: {json.dumps(body)}\n\n".encode()
    return b""


class Timeout:
    """ASGI middleware: cancel a request to :data:`INFERENCE_PATHS` after ``seconds``."""

    def __init__(self, app: Any, seconds: float) -> None:
        self.app, self.seconds = app, seconds

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in INFERENCE_PATHS:
            await self.app(scope, receive, send)
            return
        progress: dict[str, Any] = {}

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers") or [])
                progress["content_type"] = headers.get(b"content-type", b"").decode("latin-1")
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                progress["ended"] = True
            await send(message)

        timer = asyncio.timeout(self.seconds)
        try:
            async with timer:
                await self.app(scope, receive, sending)
        except TimeoutError:
            if not timer.expired():
                raise  # the request's own error, not our limit
            if progress.get("ended"):
                return
            message = f"the request ran over this server's time limit of {self.seconds:g} s (--request-timeout)"
            if "content_type" not in progress:
                response = error_response(504, message, path=scope["path"], code="timeout")
                await response(scope, receive, send)
                return
            await send({"type": "http.response.body", "more_body": False,
                        "body": stream_error(progress["content_type"], message, scope["path"])})
