"""Loopback servers for the tests of the raw download path: a scripted origin, a forward proxy, TLS material.

* :class:`OriginServer`: an HTTP/1.1 (keep-alive) server on ``127.0.0.1:0``, plain or TLS, whose
  ``routes`` map a path (query excluded) to a :data:`Route`: :func:`blob` (honours ``Range``),
  :func:`redirect`, :func:`status`, :func:`stall`, :func:`truncated`, :func:`chunked` or
  :func:`then_close`. It records every request (:class:`Seen`) and counts the TCP connections it
  accepted and closed.
* :class:`ForwardProxy`: an HTTP/1.1 forward proxy. An absolute-URI ``GET`` is fetched from the origin
  (a new ``http.client`` connection each time) and relayed; ``CONNECT host:port`` opens a tunnel that
  relays bytes both ways. With ``credentials`` it answers 407 unless ``Proxy-Authorization`` matches.
  It records what it saw (method, target, headers) and counts client connections.
* :class:`TLS`: a ``trustme`` CA, a server certificate for ``127.0.0.1`` and the contexts using them.

Both servers are context managers: leaving one stops accepting, shuts down the sockets still open
(kept-alive or tunnelled), wakes stalled handlers and joins their threads.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import re
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import urlsplit

import trustme

from tests.http_fixtures import LoopbackServer

#: Writes one response through the handler (status line, headers, body).
Route = Callable[["_OriginHandler"], None]

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authorization", "proxy-connection", "transfer-encoding"})


@dataclass(frozen=True)
class Seen:
    """One request a server received: ``target`` is the path (origin), absolute URL or ``host:port`` (proxy)."""

    method: str
    target: str
    headers: Message


class _LoopbackServer(LoopbackServer):
    """The suite's loopback server, also tracking its connections and handler threads (and speaking TLS)."""

    poll_interval = 0.02

    def __init__(self, handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None) -> None:
        super().__init__(handler)
        self.tls = tls
        self.lock = threading.Lock()
        self.accepted = 0
        self.closed = 0
        self.seen: list[Seen] = []
        self.stopping = threading.Event()
        self._open: set[socket.socket] = set()
        self._handlers: list[threading.Thread] = []

    @property
    def origin(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def record(self, method: str, target: str, headers: Message) -> None:
        with self.lock:
            self.seen.append(Seen(method, target, headers))

    def wait_closed(self, count: int, timeout: float = 5.0) -> None:
        """Wait until ``count`` connections have been closed on the server side."""
        deadline = time.monotonic() + timeout
        while self.closed < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.closed} of {count} connections closed")
            time.sleep(0.005)

    # socketserver hooks
    def get_request(self) -> tuple[socket.socket, object]:
        sock, address = super().get_request()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle delay between headers and body
        if self.tls is not None:  # the handshake happens on the first read, in the handler's thread
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        with self.lock:
            self.accepted += 1
            self._open.add(sock)
        return sock, address

    def process_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        thread = threading.Thread(target=self.process_request_thread, args=(request, client_address), daemon=True)
        with self.lock:
            self._handlers.append(thread)
        thread.start()

    def shutdown_request(self, request: socket.socket) -> None:  # type: ignore[override]
        super().shutdown_request(request)
        with self.lock:
            self._open.discard(request)
            self.closed += 1

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that hang up early, failed handshakes: expected in these tests

    def stop(self) -> None:
        self.stopping.set()
        super().stop()

    def after_stop(self) -> None:
        with self.lock:
            still_open, threads = list(self._open), list(self._handlers)
        for sock in still_open:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
        for thread in threads:
            thread.join(5)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # a forgotten kept-alive connection does not hold its thread for long
    server: _LoopbackServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    def respond(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


# ---------------------------------------------------------------------------------------------- origin


class _OriginHandler(_Handler):
    server: OriginServer

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self.server.record("GET", self.path, self.headers)
        route = self.server.routes.get(self.path.split("?", 1)[0])
        if route is None:
            self.respond(404, b"not found")
        else:
            route(self)


class OriginServer(_LoopbackServer):
    """Serves ``routes`` (mutable while running); ``seen``: the requests; ``accepted``/``closed``: connections."""

    def __init__(self, routes: dict[str, Route] | None = None, *, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(_OriginHandler, tls)
        self.routes: dict[str, Route] = dict(routes or {})

    def url(self, path: str) -> str:
        return self.origin + path

    def paths(self) -> list[str]:
        return [seen.target for seen in self.seen]

    def __enter__(self) -> OriginServer:
        super().__enter__()
        return self


def blob(data: bytes) -> Route:
    """``data`` with ``Accept-Ranges``; ``Range: bytes=a-b`` (or ``a-``) gets a 206."""

    def route(h: _OriginHandler) -> None:
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", h.headers.get("Range") or "")
        if not match:
            h.respond(200, data, {"Accept-Ranges": "bytes"})
            return
        start = int(match.group(1))
        end = min(int(match.group(2)) + 1 if match.group(2) else len(data), len(data))
        headers = {"Accept-Ranges": "bytes", "Content-Range": f"bytes {start}-{end - 1}/{len(data)}"}
        h.respond(206, data[start:end], headers)

    return route


def chunked(data: bytes, size: int) -> Route:
    """``data`` as a chunked body in pieces of ``size`` bytes."""

    def route(h: _OriginHandler) -> None:
        h.send_response(200)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for i in range(0, len(data), size):
            piece = data[i : i + size]
            h.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        h.wfile.write(b"0\r\n\r\n")

    return route


def redirect(location: str, code: int = 302) -> Route:
    def route(h: _OriginHandler) -> None:
        h.respond(code, b"moved", {"Location": location})

    return route


def status(code: int) -> Route:
    def route(h: _OriginHandler) -> None:
        h.respond(code, b"error")

    return route


def stall(length: int, first: bytes = b"", *, headers: bool = True) -> Route:
    """Headers announcing ``length`` bytes and ``first``, then nothing until the server stops.

    ``headers=False``: not even the status line.
    """

    def route(h: _OriginHandler) -> None:
        if headers:
            h.send_response(200)
            h.send_header("Content-Length", str(length))
            h.end_headers()
            h.wfile.write(first)
            h.wfile.flush()
        h.server.stopping.wait(10)
        h.close_connection = True

    return route


def truncated(length: int, first: bytes) -> Route:
    """Headers announcing ``length`` bytes, ``first`` (fewer), then the server closes the connection."""

    def route(h: _OriginHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(length))
        h.end_headers()
        h.wfile.write(first)
        h.close_connection = True

    return route


def then_close(inner: Route) -> Route:
    """``inner``'s response, then the server closes the connection (without announcing it)."""

    def route(h: _OriginHandler) -> None:
        inner(h)
        h.close_connection = True

    return route


# ---------------------------------------------------------------------------------------------- proxy


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class _ProxyHandler(_Handler):
    server: ForwardProxy

    def _authorized(self) -> bool:
        expected = self.server.credentials
        if expected is None or self.headers.get("Proxy-Authorization") == basic(*expected):
            return True
        self.respond(407, b"proxy authentication required", {"Proxy-Authenticate": 'Basic realm="test"'})
        return False

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self.server.record("GET", self.path, self.headers)
        if not self._authorized():
            return
        url = urlsplit(self.path)
        if url.scheme != "http" or not url.hostname:
            self.respond(400, b"absolute http URI expected")
            return
        forwarded = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        upstream = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=10)
        try:
            upstream.request("GET", target, headers=forwarded)
            response = upstream.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.respond(502, f"upstream failed: {exc}".encode())
            return
        finally:
            upstream.close()
        mine = _HOP_BY_HOP | {"content-length", "date", "server"}  # respond() sends its own
        headers = {k: v for k, v in response.getheaders() if k.lower() not in mine}
        self.respond(response.status, body, headers)

    def do_CONNECT(self) -> None:  # noqa: N802 - stdlib name
        self.server.record("CONNECT", self.path, self.headers)
        if not self._authorized():
            return
        host, _, port = self.path.rpartition(":")
        try:
            upstream = socket.create_connection((host, int(port)), timeout=10)
        except (OSError, ValueError) as exc:
            self.respond(502, f"cannot connect: {exc}".encode())
            return
        self.close_connection = True
        with upstream:
            self.send_response(200, "Connection established")
            self.end_headers()
            self.wfile.flush()
            _relay(self.connection, upstream, self.server.stopping)


def _relay(a: socket.socket, b: socket.socket, stopping: threading.Event) -> None:
    """Copy bytes both ways until one side closes (or the server stops)."""
    with selectors.DefaultSelector() as selector:
        selector.register(a, selectors.EVENT_READ, b)
        selector.register(b, selectors.EVENT_READ, a)
        try:
            while not stopping.is_set():
                for key, _ in selector.select(0.1):
                    data = key.fileobj.recv(1 << 16)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            return


class ForwardProxy(_LoopbackServer):
    """An ``http://`` proxy at :attr:`url` (with ``user:password@`` when it has ``credentials``)."""

    def __init__(self, credentials: tuple[str, str] | None = None) -> None:
        super().__init__(_ProxyHandler)
        self.credentials = credentials

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ranges(self) -> list[str]:
        """The ``Range`` headers of the GETs it relayed."""
        return [s.headers["Range"] for s in self.seen if s.method == "GET" and s.headers.get("Range")]

    def __enter__(self) -> ForwardProxy:
        super().__enter__()
        return self


# ---------------------------------------------------------------------------------------------- TLS


class TLS:
    """A test CA (:attr:`ca_file`), a server certificate for 127.0.0.1 and contexts that use them."""

    def __init__(self, directory: Path) -> None:
        self.ca = trustme.CA()
        self.server_cert = self.ca.issue_cert("127.0.0.1")
        self.ca_file = directory / "test-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server_cert.configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts the test CA only."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the certificate and the host name
        self.ca.configure_trust(context)
        return context


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
