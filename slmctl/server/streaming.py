"""From a generation (chunks made by a runner's worker) to an async HTTP body.

:func:`chunks` relays a :class:`~slmctl.backends.base.Generation` into the event loop through one
thread per request, and cancels the generation when the consumer stops early: a client that goes away
(Starlette cancels the streaming task) frees the model within a token. :func:`ndjson_response` is
Ollama's streaming body: one JSON object per line; an error after the stream began becomes a last
``{"error": ...}`` line, since the status line has already been sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from slmctl.backends.base import Generation
from slmctl.errors import SlmctlError

log = logging.getLogger("slmctl.server")


class Relay:
    """A generation's chunks as an async iterator; ``stats`` once it has ended."""

    def __init__(self, generation: Generation) -> None:
        self.generation = generation
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._finished = False
        self._thread = threading.Thread(target=self._pump, name="relay", daemon=True)
        self._thread.start()

    def _put(self, item: tuple[str, Any]) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is gone (server stopping): nobody is listening any more
            self.generation.cancel()

    def _pump(self) -> None:
        try:
            for chunk in self.generation:
                self._put(("chunk", chunk))
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, which reports it
            self._put(("error", error))
        else:
            self._put(("done", None))

    def __aiter__(self) -> AsyncIterator[str]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[str]:
        try:
            while True:
                kind, value = await self._queue.get()
                if kind == "chunk":
                    yield value
                elif kind == "done":
                    self._finished = True
                    return
                else:
                    self._finished = True
                    raise value
        finally:
            if not self._finished:
                self.generation.cancel()

    @property
    def stats(self) -> Any:
        return self.generation.stats


def error_message(error: BaseException) -> str:
    """The one-line text an API error carries."""
    if isinstance(error, SlmctlError):
        return error.message + (f" ({error.hint})" if error.hint else "")
    return f"internal error: {type(error).__name__}: {error}"


def ndjson_line(obj: Any) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


async def ndjson_lines(first: list[Any], rest: AsyncIterator[Any],
                       on_error: Callable[[BaseException], Any] | None = None) -> AsyncIterator[bytes]:
    """Serialise ``first`` then ``rest``; an error mid-stream ends the body with ``{"error": ...}``."""
    for obj in first:
        yield ndjson_line(obj)
    try:
        async for obj in rest:
            yield ndjson_line(obj)
    except Exception as error:  # noqa: BLE001 - the status line is gone: report in the body
        if not isinstance(error, SlmctlError):
            log.exception("error while streaming")
        yield ndjson_line(on_error(error) if on_error else {"error": error_message(error)})


def ndjson_response(first: list[Any], rest: AsyncIterator[Any], status_code: int = 200) -> Any:
    from fastapi.responses import StreamingResponse

    return StreamingResponse(ndjson_lines(first, rest), status_code=status_code,
                             media_type="application/x-ndjson")
