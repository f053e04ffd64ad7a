"""A loopback HTTP file server with injectable faults, for the downloader tests.

:class:`FileServer` serves one blob of bytes at ``path`` (default ``/file``; other paths get 404) from a
``ThreadingHTTPServer`` bound to ``127.0.0.1:0`` (optionally honouring ``Range``), counts the body bytes
it sent and the ``Range`` headers it saw, and applies queued :class:`Fault` objects to the next
requests (past the range probe, when ranges are on; without them the probe's response is the
download): a status (with headers), a connection dropped after N bytes, or a stall (sleep) after N
bytes. ``HEAD`` gets the headers of a plain ``GET`` (no fault, not counted), or ``405`` when
``head_allowed`` is off, as some signed-URL servers answer.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TypeVar

PROBE_RANGE = "bytes=0-0"


@dataclass
class Fault:
    """What to do to one request instead of (or while) serving it normally."""

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    drop_after: int | None = None
    stall_after: int | None = None
    stall_s: float = 0.0


class LoopbackServer(ThreadingHTTPServer):
    """A threading HTTP server on ``127.0.0.1:<free port>``, served from a daemon thread between
    :meth:`start` and :meth:`stop` (or as a context manager): the one start/stop helper of every loopback
    server of the suite (files, registry, hub, origin/proxy, transports). :meth:`after_stop` is the hook
    for a server that must also close what it tracked."""

    daemon_threads = True
    poll_interval = 0.05

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self._serving = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": self.poll_interval},
                                         daemon=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def base(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LoopbackServer:
        self._serving.start()
        return self

    def stop(self) -> None:
        if self._serving.is_alive():
            self.shutdown()
        self.server_close()
        self.after_stop()

    def after_stop(self) -> None:
        """Called once the server stopped accepting and serving; nothing by default."""

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


_Served = TypeVar("_Served", bound="ServedBy")


class ServedBy:
    """The context-manager side of a fixture that owns a :class:`LoopbackServer` as ``self._server``."""

    _server: LoopbackServer

    def __enter__(self: _Served) -> _Served:
        self._server.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.stop()

    def close(self) -> None:
        self._server.stop()


class FileServer(ServedBy):
    """Serve ``data`` at :attr:`url`; use as a context manager."""

    def __init__(self, data: bytes, *, ranges: bool = True, chunk: int = 64 * 1024, path: str = "/file") -> None:
        self.data = data
        self.ranges = ranges
        self.chunk = chunk
        self.path = path
        self.head_allowed = True
        self.chunk_delay = 0.0
        self.status_override: int | None = None
        self.faults: list[Fault] = []
        self.range_headers: list[str | None] = []
        self.bytes_served = 0
        self.active = 0
        self._lock = threading.Lock()
        self._server = LoopbackServer(_make_handler(self))

    @property
    def url(self) -> str:
        return self._server.base + self.path

    def reset_counters(self) -> None:
        """Zero the counters once the handlers of earlier (abandoned) requests have finished."""
        deadline = time.monotonic() + 5
        while self.active and time.monotonic() < deadline:
            time.sleep(0.01)
        with self._lock:
            self.bytes_served = 0
            self.range_headers.clear()

    def _next_fault(self, range_header: str | None) -> Fault | None:
        with self._lock:
            self.range_headers.append(range_header)
            if (self.ranges and range_header == PROBE_RANGE) or not self.faults:
                return None
            return self.faults.pop(0)

    def _count(self, n: int) -> None:
        with self._lock:
            self.bytes_served += n


def _make_handler(owner: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
            pass

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            with owner._lock:
                owner.active += 1
            try:
                self._serve()
            finally:
                with owner._lock:
                    owner.active -= 1

        def do_HEAD(self) -> None:  # noqa: N802 - stdlib name
            status = owner.status_override or (200 if owner.head_allowed else 405)
            if self.path.split("?", 1)[0] != owner.path:
                status = 404
            self.send_response(status)
            if status == 200 and owner.ranges:
                self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(owner.data) if status == 200 else 0))
            self.end_headers()

        def _serve(self) -> None:
            if self.path.split("?", 1)[0] != owner.path:
                self._status(404, None)
                return
            range_header = self.headers.get("Range")
            fault = owner._next_fault(range_header)
            status = owner.status_override or (fault.status if fault else None)
            if status is not None:
                self._status(status, fault)
                return
            data, start, end = owner.data, 0, len(owner.data)
            match = re.match(r"bytes=(\d+)-(\d*)$", range_header or "")
            if owner.ranges and match:
                start = int(match.group(1))
                end = min(int(match.group(2)) + 1 if match.group(2) else len(data), len(data))
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
            else:
                self.send_response(200)
            if owner.ranges:
                self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(end - start))
            self.end_headers()
            self._send_body(data, start, end, fault)

        def _status(self, status: int, fault: Fault | None) -> None:
            body = b"error"
            self.send_response(status)
            for key, value in (fault.headers if fault else {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _send_body(self, data: bytes, start: int, end: int, fault: Fault | None) -> None:
            sent, position = 0, start
            try:
                while position < end:
                    if fault and fault.drop_after is not None and sent >= fault.drop_after:
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        return
                    if fault and fault.stall_after is not None and sent >= fault.stall_after:
                        self.wfile.flush()
                        time.sleep(fault.stall_s)
                        fault = None
                    step = owner.chunk
                    if fault and fault.drop_after is not None:
                        step = min(step, fault.drop_after - sent)
                    if fault and fault.stall_after is not None:
                        step = min(step, fault.stall_after - sent)
                    block = data[position : min(position + max(step, 1), end)]
                    self.wfile.write(block)
                    owner._count(len(block))
                    sent += len(block)
                    position += len(block)
                    if owner.chunk_delay:
                        time.sleep(owner.chunk_delay)
            except OSError:
                self.close_connection = True

    return Handler
