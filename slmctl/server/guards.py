"""Guards at the HTTP edge: the Host check of a loopback server, CORS, and the per-key rate limit.

- :class:`HostGuard`: a server bound to loopback answers only requests whose ``Host`` is a loopback name
  (``localhost``, ``*.localhost``, a loopback address, this machine's name): a web page that rebinds its
  own DNS name to 127.0.0.1 (DNS rebinding) gets 403 instead of the API, as Ollama does.
- :func:`add_cors`: browsers may call the API from the loopback origins and the app schemes Ollama allows
  (``app://``, ``file://``, ``tauri://``, ``vscode-webview://``...) plus the ``--origins`` / ``OLLAMA_ORIGINS``
  globs; a preflight from any other origin is refused.
- :class:`RateLimit`: a token bucket of ``--rate-limit`` requests per minute per API key (the auth layer
  puts the key's name in ``request.state.key_name``; without one, per client address); over it, 429 with
  ``Retry-After``. Health and metrics probes are not counted.

Refusals use :func:`slmctl.server.errors.error_response`: Ollama's shape, or OpenAI's under ``/v1``.
"""

from __future__ import annotations

import ipaddress
import math
import re
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from slmctl.server.errors import error_response

#: Ollama's default allowed origins: the loopback ones on any port, and desktop/editor app schemes.
DEFAULT_ORIGINS = tuple(f"{scheme}://{host}{port}" for host in ("localhost", "127.0.0.1", "0.0.0.0")
                        for scheme in ("http", "https") for port in ("", ":*")) + \
    ("app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*")
#: Paths the rate limit does not count (liveness, readiness and metrics probes, the banner).
UNCOUNTED = frozenset({"/", "/api/health", "/livez", "/readyz", "/metrics", "/api/metrics"})
#: Rate-limit buckets kept at most (the least recently seen are forgotten first).
MAX_BUCKETS = 10_000


# -- Host ------------------------------------------------------------------------------------------
def host_name(header: str) -> str:
    """The name in a ``Host`` header, without its port (``[::1]:80`` -> ``::1``)."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    if value.count(":") == 1:
        value = value.partition(":")[0]
    return value.rstrip(".")


def is_loopback_host(header: str, machine: str | None = None) -> bool:
    """Whether a ``Host`` header names this machine's loopback (an empty one, HTTP/1.0's, is accepted)."""
    name = host_name(header)
    if name in ("", "localhost") or name.endswith(".localhost"):
        return True
    if machine and name == machine.lower():
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class HostGuard:
    """ASGI middleware: refuse (403) requests whose ``Host`` is not a loopback name."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.machine = socket.gethostname()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            host = next((v.decode("latin-1") for k, v in scope.get("headers") or () if k == b"host"), "")
            if not is_loopback_host(host, self.machine):
                response = error_response(
                    403, f"the Host header {host_name(host)!r} is not a loopback name: this server listens on "
                    "loopback only (bind another address with --host to serve other names)",
                    path=scope["path"], code="host_not_allowed")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


# -- CORS ------------------------------------------------------------------------------------------
def origin_pattern(globs: Iterable[str]) -> str | None:
    """One regular expression matching any of the origin ``globs`` (``*`` = any run of non-``/``)."""
    parts = [re.escape(g).replace(r"\*", "[^/]*") for g in globs if g != "*"]
    return "(" + "|".join(parts) + ")" if parts else None


def add_cors(app: Any, origins: Iterable[str]) -> None:
    """Register CORS on ``app`` for the default origins plus ``origins`` (``*`` allows every origin)."""
    from starlette.middleware.cors import CORSMiddleware

    extra = tuple(origins)
    allow_all = "*" in extra
    app.add_middleware(CORSMiddleware, allow_origins=["*"] if allow_all else [],
                       allow_origin_regex=None if allow_all else origin_pattern(DEFAULT_ORIGINS + extra),
                       allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
                       allow_headers=["*"], expose_headers=["X-Request-Id", "Retry-After"], max_age=600)


# -- rate limit ------------------------------------------------------------------------------------
class TokenBuckets:
    """``per_minute`` requests per key, refilled continuously; a burst of up to ``per_minute`` is allowed."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = MAX_BUCKETS) -> None:
        self.capacity, self.rate = float(per_minute), per_minute / 60.0
        self._clock, self._max = clock, max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Spend one request of ``key``: 0 when allowed, else the seconds until one is."""
        with self._lock:
            now = self._clock()
            tokens, stamp = self._buckets.pop(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - stamp) * self.rate)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
            self._buckets[key] = (tokens - 1 if not wait else tokens, now)
            while len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
            return wait


def client_key(scope: dict[str, Any]) -> tuple[str, str]:
    """Who a request counts against: ``("key", name)`` once the auth layer has named its key, else
    ``("address", client address)``."""
    name = (scope.get("state") or {}).get("key_name")
    if name:
        return "key", str(name)
    client = scope.get("client")
    return "address", client[0] if client else "unknown"


class RateLimit:
    """ASGI middleware: 429 with ``Retry-After`` once a key (or address) is over ``per_minute``. Register it
    inside the auth middleware, so that ``request.state.key_name`` is set when it runs."""

    def __init__(self, app: Any, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.app, self.per_minute = app, per_minute
        self.buckets = TokenBuckets(per_minute, clock)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in UNCOUNTED or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        kind, who = client_key(scope)
        wait = self.buckets.take(f"{kind}:{who}")
        if wait:
            response = error_response(
                429, f"rate limit reached: {self.per_minute} requests per minute per "
                f"{'API key' if kind == 'key' else 'client address'}; retry in {math.ceil(wait)} s",
                {"Retry-After": str(max(1, math.ceil(wait)))}, path=scope["path"], code="rate_limit_exceeded")
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
