"""HTTP plumbing of the downloader: the default client, response classification and retries.

* :func:`default_client` builds the ``httpx.Client`` used when the caller injects none: redirects
  followed, ``trust_env=True`` so ``HTTPS_PROXY``/``NO_PROXY``/``SSL_CERT_FILE``/``SSL_CERT_DIR`` apply.
* :func:`check_response` turns a status code into either success, a :class:`Transient` failure
  (408, 429, 5xx; ``Retry-After`` parsed) or a final :class:`DownloadError` (other 4xx; 401/403 come
  with a hint about ``HF_TOKEN``; 404 keeps ``.status`` so the caller can map it to "not found").
* :func:`probe` asks for ``bytes=0-0`` to learn whether the server honours ranges and the size.
* :class:`Progress` counts completed bytes across threads for the ``on_progress`` callback.
* :func:`with_retries` runs one attempt after another with exponential backoff and jitter; connection
  errors, bodies cut short and stalls (httpx read timeouts) are transient. An attempt that made
  progress (a resumable part that received bytes) starts a fresh retry budget.

Depends only on :mod:`slmctl.errors`, httpx and the standard library.
"""

from __future__ import annotations

import email.utils
import random
import re
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx

from slmctl.errors import NetworkError

T = TypeVar("T")

#: Longest wait honoured from a ``Retry-After`` header, and longest backoff delay.
MAX_DELAY_S = 120.0
USER_AGENT = "slmctl"
RETRYABLE_STATUS = frozenset({408, 429})
PROBE_RANGE = "bytes=0-0"
_CONTENT_RANGE_RE = re.compile(r"^bytes\s+\d+-\d+/(\d+|\*)$")
TOKEN_HINT = (
    "the server refused access: if this is a gated or private Hugging Face model, accept its licence on "
    "the model page and set HF_TOKEN to an access token (https://huggingface.co/settings/tokens)"
)


class DownloadError(NetworkError):
    """A download failed for good. ``status`` is the HTTP status when one caused it (404, 401, 503...);
    ``reason`` says why without the URL (after retries: the last failure and the number of attempts)."""

    def __init__(self, message: str, hint: str | None = None, *, url: str, status: int | None = None,
                 reason: str | None = None) -> None:
        super().__init__(message, hint)
        self.url = url
        self.status = status
        self.reason = reason or message


class Transient(Exception):
    """A failure worth retrying: 5xx/408/429, a connection error, a stall or a body cut short."""

    def __init__(self, reason: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


class Cancelled(Exception):
    """Raised inside a worker when another part failed or the user interrupted."""


def default_client() -> httpx.Client:
    """The client used when none is injected (honours the standard proxy and CA variables)."""
    return httpx.Client(trust_env=True, follow_redirects=True, headers={"User-Agent": USER_AGENT})


def display_url(url: str) -> str:
    """``url`` without its query string and credentials (signed CDN URLs carry tokens there)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_DELAY_S)


class HasStatus(Protocol):
    """What :func:`check_response` reads: an httpx response or a :class:`~.rawget.RawResponse`."""

    status_code: int

    @property
    def headers(self) -> Any: ...


def check_response(response: HasStatus, url: str, auth_hint: str | None = None) -> None:
    """Return for 2xx; raise :class:`Transient` for retryable statuses, :class:`DownloadError` otherwise.

    A 401/403 gets ``auth_hint`` (default: the Hugging Face token hint).
    """
    status = response.status_code
    if 200 <= status < 300:
        return
    shown = display_url(url)
    if status in RETRYABLE_STATUS or status >= 500:
        raise Transient(
            f"HTTP {status} from {shown}",
            status=status,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )
    if status in (401, 403):
        raise DownloadError(f"access denied (HTTP {status}) for {shown}", auth_hint or TOKEN_HINT, url=url,
                            status=status)
    if status == 404:
        raise DownloadError(f"not found (HTTP 404): {shown}", "check the model name or URL", url=url, status=status)
    raise DownloadError(f"download of {shown} failed: HTTP {status}", url=url, status=status)


@dataclass
class Progress:
    """Bytes completed out of ``total``; :meth:`advance` is thread-safe and calls ``callback`` serially."""

    total: int | None
    completed: int = 0
    callback: Callable[[int, int | None], None] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def advance(self, amount: int) -> None:
        with self._lock:
            self.completed += amount
            if self.callback is not None:
                self.callback(self.completed, self.total)


def probe(
    get: Callable[[Mapping[str, str]], httpx.Response], url: str, auth_hint: str | None = None
) -> tuple[bool, int | None, httpx.Response | None]:
    """One range probe of ``url`` with ``get(extra_headers)``: ``(ranges honoured, total size, response to reuse)``.

    A ``206`` is closed and read for ``Content-Range``; a ``200`` (ranges ignored) is returned open so
    its body can be the download; ``416`` means an empty file.
    """
    response = get({"Range": PROBE_RANGE})
    try:
        if response.status_code == 416:
            response.close()
            return False, 0, None
        check_response(response, url, auth_hint)
        if response.status_code == 206:
            match = _CONTENT_RANGE_RE.match(response.headers.get("Content-Range", ""))
            response.close()
            total = match.group(1) if match else "*"
            return True, (int(total) if total != "*" else None), None
        length = response.headers.get("Content-Length")
        return False, (int(length) if length and length.isdigit() else None), response
    except BaseException:
        response.close()
        raise


@dataclass
class RetryPolicy:
    """How often and how long to wait between attempts; ``sleep`` and ``jitter`` are injectable."""

    retries: int = 5
    backoff: float = 0.5
    max_delay: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    jitter: Callable[[], float] = random.random
    cancel: threading.Event = field(default_factory=threading.Event)

    def delay(self, failures: int, retry_after: float | None) -> float:
        """Backoff before retry number ``failures`` (1-based): ``Retry-After`` when given, else exponential."""
        if retry_after is not None:
            return retry_after
        base = min(self.backoff * (2 ** (failures - 1)), self.max_delay)
        return base * (0.5 + self.jitter())


def is_tls_error(exc: BaseException) -> bool:
    """Whether a transport error is a TLS failure (protocol mismatch, untrusted certificate): retrying cannot help."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "SSL" in str(exc) or "CERTIFICATE" in str(exc).upper()


def transient_from(exc: httpx.TransportError, stall_timeout: float) -> Transient:
    """Classify an httpx transport error (timeouts are stalls: no byte for ``stall_timeout`` s)."""
    if isinstance(exc, httpx.TimeoutException):
        return Transient(f"stalled: no data received for {stall_timeout:g} s")
    return Transient(f"connection error: {exc or type(exc).__name__}")


def with_retries(
    policy: RetryPolicy,
    attempt: Callable[[], T],
    *,
    url: str,
    stall_timeout: float,
    progress: Callable[[], int] | None = None,
) -> T:
    """Run ``attempt`` until it succeeds, a final error occurs or the retry budget is spent."""
    failures = 0
    while True:
        if policy.cancel.is_set():
            raise Cancelled()
        before = progress() if progress is not None else 0
        try:
            return attempt()
        except httpx.TransportError as exc:
            if is_tls_error(exc):
                raise DownloadError(f"TLS failure with {display_url(url)}: {exc}",
                                    "set SSL_CERT_FILE to the CA bundle of your network (proxies that inspect TLS "
                                    "need it)", url=url) from exc
            failure = transient_from(exc, stall_timeout)
        except Transient as exc:
            failure = exc
        if progress is not None and progress() > before:
            failures = 0
        failures += 1
        if failures > policy.retries:
            raise DownloadError(
                f"download of {display_url(url)} failed after {failures} attempts: {failure.reason}",
                "check the network connection and run the command again; finished parts are kept",
                url=url,
                status=failure.status,
                reason=f"{failure.reason} ({failures} attempts)",
            )
        policy.sleep(policy.delay(failures, failure.retry_after))
