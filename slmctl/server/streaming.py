"""From a generation's chunks (made by a runner) to an async HTTP body.

:class:`Relay` is the sink a runner delivers one request's chunks to; it hands them to the event loop
and cancels the generation when the consumer stops early: a client that goes away (Starlette cancels
the streaming task) frees the model within a token. :func:`collect` reads a whole answer, cancelling it
when the client goes away. :func:`ndjson_response` is Ollama's streaming body: one JSON object per line;
an error after the stream began becomes a last ``{"error": ...}`` line, since the status line has already
been sent. :func:`sse_response` is OpenAI's: Server-Sent Events (framed by sse-starlette) ending with
``data: [DONE]``, or with an ``error`` event after a failure mid-stream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from slmctl.backends.base import Stats, TokenLogprob
from slmctl.errors import SlmctlError

log = logging.getLogger("slmctl.server")


class Relay:
    """One generation's results as an async iterator: a runner's sink that hands each chunk straight to
    the event loop (from the runner's reader or worker thread: one thread hop per chunk, no more).

    ``stats`` and ``text`` are set once it has ended; leaving the iteration early cancels the generation.
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._cancel: Callable[[], None] = lambda: None
        self._submitted = time.perf_counter_ns()
        self._load_ns = 0
        self._parts: list[str] = []
        self._finished = False
        self.stats: Stats | None = None
        #: The log-probabilities of the tokens read so far (when the request asked for them).
        self.logprobs: list[TokenLogprob] = []
        #: Called with the stats when the generation ends normally (on the event loop; the metrics' hook).
        self.on_done: list[Callable[[Stats], None]] = []

    def started(self, cancel: Callable[[], None], load_ns: int = 0) -> None:
        """The runner took the request: how to cancel it, and the load time it waited for."""
        self._cancel, self._load_ns = cancel, load_ns

    # -- the sink side (any thread) ----------------------------------------------------------------
    def _post(self, item: tuple[str, Any]) -> None:
        if threading.get_ident() == self._loop_thread:  # a runner read on the event loop itself
            self._queue.put_nowait(item)
            return
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is gone (server stopping): nobody is listening any more
            self._cancel()

    def chunk(self, text: str) -> None:
        self._post(("chunk", text))

    def done(self, stats: Stats) -> None:
        self._post(("done", stats))

    def fail(self, error: BaseException) -> None:
        self._post(("error", error))

    def cancel(self) -> None:
        """Stop the generation (queued or running) unless it has ended."""
        if not self._finished:
            self._finished = True
            self._cancel()

    # -- the consumer side (the event loop) --------------------------------------------------------
    @property
    def text(self) -> str:
        return "".join(self._parts)

    def __aiter__(self) -> AsyncIterator[str]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[str]:
        try:
            while True:
                kind, value = await self._queue.get()
                if kind == "chunk":
                    self._parts.append(value)
                    self.logprobs.extend(getattr(value, "logprobs", ()))
                    yield value
                    continue
                self._finished = True
                if kind == "error":
                    raise value
                value.load_duration += self._load_ns
                value.total_duration = time.perf_counter_ns() - self._submitted + self._load_ns
                self.stats = value
                for observe in self.on_done:
                    try:
                        observe(value)
                    except Exception:  # noqa: BLE001 - an observer never breaks the answer
                        log.exception("generation observer failed")
                return
        finally:
            if not self._finished:
                self._finished = True
                self._cancel()


async def collect(relay: Relay, http: Any) -> str:
    """The whole answer; a client that disconnects meanwhile cancels the generation."""
    parts: list[str] = []

    async def read() -> None:
        async for chunk in relay:
            parts.append(chunk)

    task = asyncio.ensure_future(read())
    try:
        while not task.done():
            done, _ = await asyncio.wait({task}, timeout=0.5)
            if not done and await http.is_disconnected():
                task.cancel()
                break
        await task
        return "".join(parts)
    finally:
        if not task.done():
            task.cancel()


def error_message(error: BaseException) -> str:
    """The one-line text an API error carries."""
    if isinstance(error, SlmctlError):
        return error.message + (f" ({error.hint})" if error.hint else "")
    return f"internal error: {type(error).__name__}: {error}"


def ndjson_line(obj: Any) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


async def ndjson_lines(first: list[Any], rest: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    """Serialise ``first`` then ``rest``; an error mid-stream ends the body with ``{"error": ...}``."""
    for obj in first:
        yield ndjson_line(obj)
    try:
        async for obj in rest:
            yield ndjson_line(obj)
    except Exception as error:  # noqa: BLE001 - the status line is gone: report in the body
        if not isinstance(error, SlmctlError):
            log.exception("error while streaming")
        yield ndjson_line({"error": error_message(error)})


def ndjson_response(first: list[Any], rest: AsyncIterator[Any], status_code: int = 200) -> Any:
    from fastapi.responses import StreamingResponse

    return StreamingResponse(ndjson_lines(first, rest), status_code=status_code,
                             media_type="application/x-ndjson")


async def _sse_events(events: AsyncIterator[Any], on_error: Callable[[BaseException], Any]) -> AsyncIterator[Any]:
    from sse_starlette import ServerSentEvent

    try:
        async for obj in events:
            yield ServerSentEvent(data=obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False,
                                                                                   separators=(",", ":")))
    except Exception as error:  # noqa: BLE001 - the status line is gone: report in the stream
        if not isinstance(error, SlmctlError):
            log.exception("error while streaming")
        yield ServerSentEvent(data=json.dumps(on_error(error), ensure_ascii=False))
        return
    yield ServerSentEvent(data="[DONE]")


def sse_response(events: AsyncIterator[Any], on_error: Callable[[BaseException], Any]) -> Any:
    """``events`` (JSON objects) as Server-Sent Events, then ``data: [DONE]``; an error raised by
    ``events`` becomes a last event with ``on_error(error)`` instead."""
    from sse_starlette import EventSourceResponse

    return EventSourceResponse(_sse_events(events, on_error), sep="\n", ping=15)
