"""The downloader's fast path for bodies: HTTP GETs on kept-alive ``http.client`` connections.

Through httpx a body byte is copied three times in Python (socket read, h11's receive buffer, the
chunk it yields) in 64 KiB pieces; on a fast link (a LAN mirror, loopback) that caps one connection
at a few hundred MB/s and takes the CPU the sha256 needs. A :class:`RawSession` (one per download
worker) sends requests with the standard library's ``http.client`` and :meth:`RawResponse.read1`
returns what one socket read brought (up to the asked size): the kernel's copy is the only one, and a
slow link still reports progress. A session keeps its connections alive between requests and
remembers where a URL redirected (Hugging Face ``resolve`` -> CDN), so consecutive parts cost one
request each; a remembered target that starts refusing (an expired signed URL) is resolved again.

It keeps httpx's behaviour where it matters: the TLS context is ``httpx.create_ssl_context()`` (certifi,
or ``SSL_CERT_FILE``/``SSL_CERT_DIR``), proxies come from the environment like ``trust_env=True``
(``HTTP(S)_PROXY``, ``ALL_PROXY``, ``NO_PROXY``, read from the environment mapping the caller passes;
an ``http://`` proxy, tunnelled with ``CONNECT`` for https), redirects are followed (at most :data:`MAX_REDIRECTS`) and ``Authorization`` is dropped when a
redirect leaves the origin. :func:`supported` says when a URL can take this path (else the caller uses
httpx). Network failures surface as :class:`~.http.Transient` (retryable) or
:class:`~.http.DownloadError` (a certificate problem: retrying cannot help).
"""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urljoin, urlsplit

from slmctl.sources.downloader.http import USER_AGENT, DownloadError, Transient, display_url

MAX_REDIRECTS = 10
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
#: Statuses from a remembered redirect target that mean "resolve the original URL again".
_STALE = frozenset({401, 403, 404, 410})


class UnsupportedRoute(DownloadError):
    """A redirect led to a URL whose proxy this module cannot use: the caller should fall back to httpx."""


@dataclass(frozen=True)
class _Proxy:
    host: str
    port: int
    authorization: str | None


def env_proxies(env: Mapping[str, str]) -> dict[str, str]:
    """``{scheme: proxy URL}`` (and ``"no"``: the NO_PROXY list) from ``env``; lower-case names win.

    As ``urllib.request.getproxies()`` (so httpx) reads them: an empty lower-case variable unsets.
    """
    found: dict[str, str] = {}
    for name in sorted(env, key=lambda n: n == n.lower()):  # upper-case first, lower-case overrides
        value, key = env[name], name.lower()
        if key.endswith("_proxy"):
            if value:
                found[key[: -len("_proxy")]] = value
            elif name == key:
                found.pop(key[: -len("_proxy")], None)
    return found


def _proxy_for(url: str, env: Mapping[str, str]) -> _Proxy | None | bool:
    """The proxy for ``url``; None: go direct; False: a proxy this module cannot use."""
    parts = urlsplit(url)
    proxies = env_proxies(env)
    if not parts.hostname or urllib.request.proxy_bypass_environment(parts.hostname, proxies):
        return None
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy:
        return None
    p = urlsplit(proxy if "://" in proxy else "http://" + proxy)
    if p.scheme != "http" or not p.hostname:
        return False  # https:// or socks proxies: httpx handles those
    auth = None
    if p.username is not None:
        token = base64.b64encode(f"{unquote(p.username)}:{unquote(p.password or '')}".encode()).decode()
        auth = f"Basic {token}"
    return _Proxy(p.hostname, p.port or 80, auth)


def supported(url: str, env: Mapping[str, str]) -> bool:
    """Whether a :class:`RawSession` can fetch ``url`` (http/https, direct or through an http:// proxy)."""
    return urlsplit(url).scheme in ("http", "https") and _proxy_for(url, env) is not False


def _classify(exc: BaseException, url: str) -> Exception:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return DownloadError(
            f"TLS certificate of {display_url(url)} not trusted: {exc.verify_message or exc}",
            "set SSL_CERT_FILE to the CA bundle of your network (proxies that inspect TLS need it)",
            url=url,
        )
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return Transient("stalled: no data received within the timeout")
    return Transient(f"connection error: {exc or type(exc).__name__}")


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


def _headers_for(source: str, destination: str, headers: Mapping[str, str]) -> dict[str, str]:
    """The headers to send to ``destination`` when ``source`` led there: no credentials to another origin."""
    if _origin(source) == _origin(destination):
        return dict(headers)
    return {k: v for k, v in headers.items() if k.lower() != "authorization"}


class RawResponse:
    """An open response: ``status_code``, ``headers`` (case-insensitive ``get``), ``url`` and :meth:`read1`.

    :meth:`close` hands the connection back to its session when the body was read to the end.
    """

    def __init__(self, response: http.client.HTTPResponse, url: str, release: Callable[[bool], None]) -> None:
        self._response = response
        self._release = release
        self._closed = False
        self.status_code = response.status
        self.headers = response.headers
        self.url = url

    def read1(self, limit: int) -> bytes:
        """The next body bytes that have arrived (one socket read, at most ``limit``); b"" at the end."""
        try:
            return self._response.read1(limit)
        except (OSError, http.client.HTTPException) as exc:
            raise _classify(exc, self.url) from exc

    def close(self) -> None:
        if self._closed:  # once only: a second release could hand back a connection in use again
            return
        self._closed = True
        response = self._response
        # Read to the end? (Before Python 3.13, read1 leaves a finished Content-Length body open.)
        finished = response.length == 0 if response.length is not None else response.isclosed()
        response.close()
        self._release(finished and not response.will_close)

    def __enter__(self) -> RawResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RawSession:
    """GETs from one thread, on kept-alive connections (one per origin or proxy). Not thread-safe.

    ``timeout`` bounds connecting and every read (a stall); ``context()`` gives the TLS context (called
    only for https); proxies come from ``env``.
    """

    def __init__(self, *, timeout: float, context: Callable[[], ssl.SSLContext], env: Mapping[str, str]) -> None:
        self.timeout = timeout
        self.context = context
        self.env = env
        self._idle: dict[tuple, http.client.HTTPConnection] = {}
        self._resolved: dict[str, str] = {}

    def get(self, url: str, headers: Mapping[str, str]) -> RawResponse:
        """``GET url`` with ``headers``; the response once its headers are in (redirects followed)."""
        sent = {"User-Agent": USER_AGENT, **headers}
        remembered = self._resolved.get(url)
        if remembered is not None:
            response = self._follow(remembered, _headers_for(url, remembered, sent))
            if response.status_code not in _STALE:
                return response
            response.close()
            del self._resolved[url]
        response = self._follow(url, sent)
        if response.url != url and 200 <= response.status_code < 300:
            self._resolved[url] = response.url
        return response

    def close(self) -> None:
        for conn in self._idle.values():
            conn.close()
        self._idle.clear()

    def _follow(self, url: str, headers: dict[str, str]) -> RawResponse:
        for _ in range(MAX_REDIRECTS + 1):
            response = self._request(url, headers)
            location = response.headers.get("Location")
            if response.status_code not in _REDIRECTS or not location:
                return response
            response.read1(1 << 16)  # a redirect's small body, so the connection can be reused
            response.close()
            following = urljoin(url, location)
            headers = _headers_for(url, following, headers)
            url = following
        raise DownloadError(f"too many redirects from {display_url(url)}", url=url)

    def _request(self, url: str, headers: dict[str, str]) -> RawResponse:
        key, connect, target, extra = self._route(url)
        conn = self._idle.pop(key, None)
        fresh = conn is None
        while True:
            conn = conn or connect()
            try:
                conn.request("GET", target, headers={**headers, **extra})
                response = conn.getresponse()
                break
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if fresh or isinstance(exc, (socket.timeout, TimeoutError)):
                    raise _classify(exc, url) from exc
                conn, fresh = None, True  # the server closed a kept-alive connection: one new try

        def release(reusable: bool, conn: http.client.HTTPConnection = conn) -> None:
            if reusable and key not in self._idle:
                self._idle[key] = conn
            else:
                conn.close()

        return RawResponse(response, url, release)

    def _route(self, url: str) -> tuple[tuple, Callable[[], http.client.HTTPConnection], str, dict[str, str]]:
        """Connection key and maker, request target and extra headers for ``url`` (direct or proxied)."""
        parts = urlsplit(url)
        host, https = parts.hostname or "", parts.scheme == "https"
        port = parts.port or (443 if https else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        proxy = _proxy_for(url, self.env)
        if proxy is False:  # a redirect led here: going direct would bypass the configured proxy
            raise UnsupportedRoute(f"cannot reach {display_url(url)}: its proxy is not an http:// proxy", url=url)
        timeout = self.timeout
        if isinstance(proxy, _Proxy):
            auth = {"Proxy-Authorization": proxy.authorization} if proxy.authorization else {}
            if https:
                def tunnel() -> http.client.HTTPConnection:
                    conn = http.client.HTTPSConnection(proxy.host, proxy.port, timeout=timeout, context=self.context())
                    conn.set_tunnel(host, port, headers=auth)
                    return conn

                return ("tunnel", proxy.host, proxy.port, host, port), tunnel, target, {}
            return (("proxy", proxy.host, proxy.port),
                    lambda: http.client.HTTPConnection(proxy.host, proxy.port, timeout=timeout), url, auth)
        if https:
            return (("https", host, port),
                    lambda: http.client.HTTPSConnection(host, port, timeout=timeout, context=self.context()), target, {})
        return ("http", host, port), lambda: http.client.HTTPConnection(host, port, timeout=timeout), target, {}
