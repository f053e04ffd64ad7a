"""Tests of :mod:`slmctl.sources.downloader.rawget` against real loopback servers (:mod:`tests.proxy_fixtures`).

Plain and TLS origins, a forward proxy (absolute-URI GETs and CONNECT tunnels), redirects, kept-alive
connections counted on the server side, stalls, and the downloader end to end on the raw path.
"""

from __future__ import annotations

import itertools
import os
import random
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from slmctl.fileio import sha256_bytes
from slmctl.sources.downloader.download import DownloadTarget, download
from slmctl.sources.downloader.http import PROBE_RANGE, USER_AGENT, DownloadError, Transient
from slmctl.sources.downloader.parts import plan_parts
from slmctl.sources.downloader.rawget import MAX_REDIRECTS, RawResponse, RawSession, env_proxies, supported
from tests.proxy_fixtures import (
    TLS,
    ForwardProxy,
    OriginServer,
    basic,
    blob,
    chunked,
    free_port,
    redirect,
    stall,
    status,
    then_close,
    truncated,
)

DATA = random.Random(99).randbytes(200_000)
Sessions = Callable[..., RawSession]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLS:
    return TLS(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def origin() -> Iterator[OriginServer]:
    with OriginServer({"/file": blob(DATA)}) as srv:
        yield srv


@pytest.fixture
def cdn() -> Iterator[OriginServer]:
    """A second origin (another port: another origin for redirects)."""
    with OriginServer() as srv:
        yield srv


@pytest.fixture
def secure(tls: TLS) -> Iterator[OriginServer]:
    with OriginServer({"/file": blob(DATA)}, tls=tls.server_context()) as srv:
        yield srv


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    with ForwardProxy() as srv:
        yield srv


@pytest.fixture
def sessions() -> Iterator[Sessions]:
    """``sessions(env=..., timeout=..., context=...)`` makes a RawSession, closed after the test."""
    made: list[RawSession] = []

    def make(env: dict[str, str] | None = None, timeout: float = 5.0,
             context: Callable[[], ssl.SSLContext] = ssl.create_default_context) -> RawSession:
        session = RawSession(timeout=timeout, context=context, env=env or {})
        made.append(session)
        return session

    yield make
    for session in made:
        session.close()


@pytest.fixture
def no_env_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy variables in os.environ (the downloader's httpx probe reads them)."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)


def read_all(response: RawResponse, limit: int = 1 << 16) -> bytes:
    """The rest of the body through ``read1``; closes the response."""
    with response:
        return b"".join(iter(lambda: response.read1(limit), b""))


def fetch(session: RawSession, url: str, headers: dict[str, str] | None = None) -> bytes:
    response = session.get(url, headers or {})
    assert 200 <= response.status_code < 300, response.status_code
    return read_all(response)


def dead_proxy() -> str:
    return f"http://127.0.0.1:{free_port()}"


# ------------------------------------------------------------------------------------ GET, keep-alive


def test_range_get_read1_in_pieces_then_connection_reused(origin: OriginServer, sessions: Sessions) -> None:
    session = sessions()
    limits = itertools.cycle([1, 100, 4096, 7000, 1 << 16])
    pieces: list[bytes] = []
    with session.get(origin.url("/file"), {"Range": "bytes=100-50099", "X-Test": "yes"}) as response:
        assert response.status_code == 206
        assert response.url == origin.url("/file")
        assert response.headers.get("content-range") == f"bytes 100-50099/{len(DATA)}"
        assert response.headers.get("Content-Length") == "50000"
        while True:
            limit = next(limits)
            piece = response.read1(limit)
            assert len(piece) <= limit
            if not piece:
                break
            pieces.append(piece)
    assert b"".join(pieces) == DATA[100:50100]
    assert min(map(len, pieces)) == 1 and len(pieces) >= 5
    sent = origin.seen[0].headers
    assert (sent["Range"], sent["X-Test"], sent["User-Agent"]) == ("bytes=100-50099", "yes", USER_AGENT)

    assert fetch(session, origin.url("/file")) == DATA  # read to the end: the connection is kept
    assert origin.accepted == 1 and len(origin.seen) == 2


def test_connection_reused_when_exactly_the_announced_bytes_were_read(
    origin: OriginServer, sessions: Sessions
) -> None:
    # as the downloader's parts do: stop at the last byte, without the final read1 that returns b""
    session = sessions()
    for start in (0, 1000):
        with session.get(origin.url("/file"), {"Range": f"bytes={start}-{start + 999}"}) as response:
            body = b""
            while len(body) < 1000:
                body += response.read1(1000 - len(body))
        assert body == DATA[start : start + 1000]
    assert origin.accepted == 1


def test_truncated_body_ends_early_and_is_not_reused(origin: OriginServer, sessions: Sessions) -> None:
    origin.routes["/short"] = truncated(1000, b"x" * 10)
    session = sessions()
    with session.get(origin.url("/short"), {}) as response:
        assert read_all(response) == b"x" * 10  # b"" at the cut: the caller compares with what it expected
    origin.wait_closed(1)
    assert fetch(session, origin.url("/file"), {"Range": "bytes=0-9"}) == DATA[:10]
    assert origin.accepted == 2


def test_chunked_body_read1_limits_and_reuse(origin: OriginServer, sessions: Sessions) -> None:
    origin.routes["/chunked"] = chunked(DATA[:30_000], 7000)
    session = sessions()
    response = session.get(origin.url("/chunked"), {})
    pieces = list(iter(lambda: response.read1(5000), b""))
    response.close()
    assert b"".join(pieces) == DATA[:30_000] and max(map(len, pieces)) <= 5000
    assert fetch(session, origin.url("/file")) == DATA
    assert origin.accepted == 1


def test_body_closed_early_is_not_reused(origin: OriginServer, sessions: Sessions) -> None:
    session = sessions()
    response = session.get(origin.url("/file"), {})
    assert len(response.read1(1000)) <= 1000
    response.close()
    origin.wait_closed(1)  # the session closed that connection
    assert fetch(session, origin.url("/file"), {"Range": "bytes=0-9"}) == DATA[:10]
    assert origin.accepted == 2


def test_close_twice_does_not_hand_back_a_busy_connection(origin: OriginServer, sessions: Sessions) -> None:
    session = sessions()
    first = session.get(origin.url("/file"), {"Range": "bytes=0-9"})
    assert read_all(first) == DATA[:10]  # closed: the connection is idle again
    second = session.get(origin.url("/file"), {"Range": "bytes=10-19"})  # takes that connection
    first.close()  # again: must not give the connection back while `second` uses it
    assert fetch(session, origin.url("/file"), {"Range": "bytes=20-29"}) == DATA[20:30]
    assert read_all(second) == DATA[10:20]
    assert origin.accepted == 2


def test_server_closed_kept_alive_connection_is_replaced(origin: OriginServer, sessions: Sessions) -> None:
    origin.routes["/file"] = then_close(blob(DATA))  # no "Connection: close": the client keeps it
    session = sessions()
    assert fetch(session, origin.url("/file"), {"Range": "bytes=0-99"}) == DATA[:100]
    origin.wait_closed(1)
    assert fetch(session, origin.url("/file"), {"Range": "bytes=100-199"}) == DATA[100:200]
    assert origin.accepted == 2 and len(origin.seen) == 2


def test_connection_refused_is_transient(sessions: Sessions) -> None:
    with pytest.raises(Transient, match="connection error"):
        sessions().get(f"http://127.0.0.1:{free_port()}/file", {})


# ------------------------------------------------------------------------------------ redirects


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("kind", ["absolute", "root-relative", "relative"])
def test_redirect_followed_on_the_same_origin(origin: OriginServer, sessions: Sessions, code: int, kind: str) -> None:
    location = {"absolute": origin.url("/dir/data"), "root-relative": "/dir/data", "relative": "data"}[kind]
    origin.routes["/dir/start"] = redirect(location, code)
    origin.routes["/dir/data"] = blob(DATA)
    with sessions().get(origin.url("/dir/start"), {"Range": "bytes=5-14", "Authorization": "Bearer t"}) as response:
        assert response.status_code == 206 and response.url == origin.url("/dir/data")
        assert read_all(response) == DATA[5:15]
    assert origin.paths() == ["/dir/start", "/dir/data"]
    assert origin.seen[1].headers["Authorization"] == "Bearer t"  # same origin: credentials kept
    assert origin.seen[1].headers["Range"] == "bytes=5-14"
    assert origin.accepted == 1  # the redirect's body was drained and its connection reused


def test_redirect_to_another_origin_drops_authorization(
    origin: OriginServer, cdn: OriginServer, sessions: Sessions
) -> None:
    cdn.routes["/blob"] = blob(DATA)
    origin.routes["/resolve"] = redirect(cdn.url("/blob?sig=1"))
    session = sessions()
    headers = {"Authorization": "Bearer secret", "Range": "bytes=10-19", "X-Trace": "t1"}
    assert fetch(session, origin.url("/resolve"), headers) == DATA[10:20]
    assert origin.seen[0].headers["Authorization"] == "Bearer secret"
    at_cdn = cdn.seen[0].headers
    assert "Authorization" not in at_cdn
    assert (at_cdn["Range"], at_cdn["X-Trace"]) == ("bytes=10-19", "t1")
    # the remembered target is another origin too
    assert fetch(session, origin.url("/resolve"), headers) == DATA[10:20]
    assert len(origin.seen) == 1 and "Authorization" not in cdn.seen[1].headers


@pytest.mark.parametrize("hops", [MAX_REDIRECTS, MAX_REDIRECTS + 1])
def test_redirect_limit(origin: OriginServer, sessions: Sessions, hops: int) -> None:
    for i in range(hops):
        origin.routes[f"/hop{i}"] = redirect(f"/hop{i + 1}", 307)
    origin.routes[f"/hop{hops}"] = blob(DATA)
    session = sessions()
    if hops <= MAX_REDIRECTS:
        assert fetch(session, origin.url("/hop0"), {"Range": "bytes=0-3"}) == DATA[:4]
    else:
        with pytest.raises(DownloadError, match="too many redirects"):
            session.get(origin.url("/hop0"), {})
    assert len(origin.seen) == MAX_REDIRECTS + 1
    assert origin.accepted == 1


@pytest.mark.parametrize("refusal", [401, 403, 404, 410])
def test_remembered_target_is_resolved_again_when_it_refuses(
    origin: OriginServer, cdn: OriginServer, sessions: Sessions, refusal: int
) -> None:
    cdn.routes["/signed/1"] = blob(DATA)
    origin.routes["/resolve"] = redirect(cdn.url("/signed/1?sig=a"))
    session, url = sessions(), origin.url("/resolve")
    assert fetch(session, url, {"Range": "bytes=0-9"}) == DATA[:10]
    assert fetch(session, url, {"Range": "bytes=10-19"}) == DATA[10:20]
    assert origin.paths() == ["/resolve"]  # the second request went straight to the target
    assert cdn.paths() == ["/signed/1?sig=a"] * 2

    # the signed URL expires; the original URL now redirects to a fresh one
    cdn.routes["/signed/1"] = status(refusal)
    cdn.routes["/signed/2"] = blob(DATA)
    origin.routes["/resolve"] = redirect(cdn.url("/signed/2?sig=b"))
    with session.get(url, {"Range": "bytes=20-29"}) as response:
        assert response.status_code == 206 and response.url == cdn.url("/signed/2?sig=b")
        assert read_all(response) == DATA[20:30]
    assert origin.paths() == ["/resolve"] * 2
    assert cdn.paths()[2:] == ["/signed/1?sig=a", "/signed/2?sig=b"]

    assert fetch(session, url, {"Range": "bytes=30-39"}) == DATA[30:40]  # the new target is remembered
    assert len(origin.seen) == 2 and cdn.paths()[-1] == "/signed/2?sig=b"


def test_remembered_target_other_errors_are_returned(
    origin: OriginServer, cdn: OriginServer, sessions: Sessions
) -> None:
    cdn.routes["/signed"] = blob(DATA)
    origin.routes["/resolve"] = redirect(cdn.url("/signed"))
    session = sessions()
    assert fetch(session, origin.url("/resolve")) == DATA
    cdn.routes["/signed"] = status(503)
    with session.get(origin.url("/resolve"), {}) as response:
        assert response.status_code == 503  # retryable by the caller: not a reason to resolve again
    assert origin.paths() == ["/resolve"]


# ------------------------------------------------------------------------------------ proxies


def test_http_proxy_from_env(origin: OriginServer, proxy: ForwardProxy, sessions: Sessions) -> None:
    session = sessions(env={"HTTP_PROXY": proxy.url})
    assert fetch(session, origin.url("/file"), {"Range": "bytes=0-9"}) == DATA[:10]
    assert fetch(session, origin.url("/file?x=1"), {"Range": "bytes=10-19"}) == DATA[10:20]
    assert [(s.method, s.target) for s in proxy.seen] == [
        ("GET", origin.url("/file")), ("GET", origin.url("/file?x=1"))
    ]
    assert proxy.ranges() == ["bytes=0-9", "bytes=10-19"]
    assert proxy.seen[0].headers["Host"] == f"127.0.0.1:{origin.port}"
    assert "Proxy-Authorization" not in proxy.seen[0].headers
    assert proxy.accepted == 1  # the connection to the proxy is kept alive


def test_proxy_credentials_from_the_proxy_url(origin: OriginServer, sessions: Sessions) -> None:
    with ForwardProxy(credentials=("user", "p@ss word")) as proxy:
        good = f"http://user:p%40ss%20word@127.0.0.1:{proxy.port}"
        assert fetch(sessions(env={"http_proxy": good}), origin.url("/file"), {"Range": "bytes=0-9"}) == DATA[:10]
        assert proxy.seen[0].headers["Proxy-Authorization"] == basic("user", "p@ss word")
        bad = f"http://user:wrong@127.0.0.1:{proxy.port}"
        with sessions(env={"http_proxy": bad}).get(origin.url("/file"), {}) as response:
            assert response.status_code == 407
    assert len(origin.seen) == 1


@pytest.mark.parametrize(
    "no_proxy", [{"NO_PROXY": "127.0.0.1"}, {"no_proxy": "example.com, 127.0.0.1"}, {"NO_PROXY": "*"}]
)
def test_no_proxy_bypasses_the_proxy(
    origin: OriginServer, proxy: ForwardProxy, sessions: Sessions, no_proxy: dict[str, str]
) -> None:
    session = sessions(env={"HTTP_PROXY": proxy.url, **no_proxy})
    assert fetch(session, origin.url("/file"), {"Range": "bytes=0-9"}) == DATA[:10]
    assert proxy.seen == [] and len(origin.seen) == 1


def test_lower_case_variables_win(origin: OriginServer, proxy: ForwardProxy, sessions: Sessions) -> None:
    dead = dead_proxy()
    for env in ({"HTTP_PROXY": dead, "http_proxy": proxy.url}, {"http_proxy": proxy.url, "HTTP_PROXY": dead}):
        assert fetch(sessions(env=env), origin.url("/file"), {"Range": "bytes=0-9"}) == DATA[:10]
    assert len(proxy.seen) == 2


def test_empty_lower_case_variable_unsets_the_upper_case_one(origin: OriginServer, sessions: Sessions) -> None:
    env = {"HTTP_PROXY": dead_proxy(), "http_proxy": ""}  # as urllib.request.getproxies (and so httpx) read it
    assert "http" not in env_proxies(env)
    assert fetch(sessions(env=env), origin.url("/file"), {"Range": "bytes=0-9"}) == DATA[:10]


def test_all_proxy_and_per_scheme_variables(origin: OriginServer, proxy: ForwardProxy, sessions: Sessions) -> None:
    assert fetch(sessions(env={"ALL_PROXY": proxy.url}), origin.url("/file"), {"Range": "bytes=0-9"}) == DATA[:10]
    assert len(proxy.seen) == 1
    # an https proxy is not used for an http URL
    assert fetch(sessions(env={"HTTPS_PROXY": dead_proxy()}), origin.url("/file"), {"Range": "bytes=0-9"}) == DATA[:10]
    assert len(proxy.seen) == 1 and len(origin.seen) == 2


def test_proxies_come_from_the_injected_env_only(
    origin: OriginServer, sessions: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", dead_proxy())
    monkeypatch.setenv("http_proxy", dead_proxy())
    assert fetch(sessions(env={}), origin.url("/file"), {"Range": "bytes=0-9"}) == DATA[:10]


@pytest.mark.parametrize(
    ("url", "env", "expected"),
    [
        ("http://h.example/f", {}, True),
        ("https://h.example/f", {}, True),
        ("ftp://h.example/f", {}, False),
        ("https://h.example/f", {"HTTPS_PROXY": "http://p.example:3128"}, True),
        ("http://h.example/f", {"HTTP_PROXY": "p.example:3128"}, True),  # no scheme: http://
        ("https://h.example/f", {"HTTPS_PROXY": "https://p.example:3128"}, False),
        ("https://h.example/f", {"ALL_PROXY": "socks5://p.example:1080"}, False),
        ("http://h.example/f", {"http_proxy": "socks5h://p.example:1080"}, False),
        ("http://h.example/f", {"HTTPS_PROXY": "socks5://p.example:1080"}, True),  # another scheme's proxy
        ("https://h.example/f", {"HTTPS_PROXY": "socks5://p.example:1080", "NO_PROXY": "h.example"}, True),
    ],
)
def test_supported(url: str, env: dict[str, str], expected: bool) -> None:
    assert supported(url, env) is expected


def test_redirect_behind_an_unsupported_proxy_does_not_go_direct(
    origin: OriginServer, secure: OriginServer, proxy: ForwardProxy, tls: TLS, sessions: Sessions
) -> None:
    origin.routes["/resolve"] = redirect(secure.url("/file"))
    env = {"HTTP_PROXY": proxy.url, "HTTPS_PROXY": "socks5://127.0.0.1:1080"}
    assert supported(origin.url("/resolve"), env)
    with pytest.raises(DownloadError, match="proxy"):
        sessions(env=env, context=tls.client_context).get(origin.url("/resolve"), {})
    assert len(proxy.seen) == 1 and secure.accepted == 0  # the socks proxy was not bypassed


# ------------------------------------------------------------------------------------ TLS


def test_https_direct(secure: OriginServer, tls: TLS, sessions: Sessions) -> None:
    session = sessions(context=tls.client_context)
    assert fetch(session, secure.url("/file"), {"Range": "bytes=0-9"}) == DATA[:10]
    assert fetch(session, secure.url("/file")) == DATA
    assert secure.accepted == 1


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_https_untrusted_certificate_is_final(
    secure: OriginServer, tls: TLS, sessions: Sessions, host: str
) -> None:
    # 127.0.0.1: the system CAs do not know the test CA; localhost: the certificate names 127.0.0.1 only
    context = ssl.create_default_context if host == "127.0.0.1" else tls.client_context
    url = f"https://{host}:{secure.port}/file"
    with pytest.raises(DownloadError) as info:
        sessions(context=context).get(url, {})
    assert "not trusted" in info.value.message and "SSL_CERT_FILE" in (info.value.hint or "")
    assert not isinstance(info.value, Transient)
    assert info.value.url == url
    assert secure.seen == []


def test_https_through_connect_tunnel(secure: OriginServer, proxy: ForwardProxy, tls: TLS, sessions: Sessions) -> None:
    session = sessions(env={"HTTPS_PROXY": proxy.url}, context=tls.client_context)
    assert fetch(session, secure.url("/file"), {"Range": "bytes=0-9"}) == DATA[:10]
    assert fetch(session, secure.url("/file"), {"Range": "bytes=10-19"}) == DATA[10:20]
    assert [(s.method, s.target) for s in proxy.seen] == [("CONNECT", f"127.0.0.1:{secure.port}")]
    assert secure.paths() == ["/file", "/file"]  # origin-form targets inside the tunnel
    assert secure.accepted == 1 and proxy.accepted == 1  # one tunnel, kept alive

    with pytest.raises(DownloadError, match="not trusted"):  # the origin's certificate is checked through it
        sessions(env={"HTTPS_PROXY": proxy.url}).get(secure.url("/file"), {})


def test_https_tunnel_with_proxy_credentials(secure: OriginServer, tls: TLS, sessions: Sessions) -> None:
    with ForwardProxy(credentials=("user", "secret")) as proxy:
        env = {"https_proxy": f"http://user:secret@127.0.0.1:{proxy.port}"}
        session = sessions(env=env, context=tls.client_context)
        assert fetch(session, secure.url("/file"), {"Range": "bytes=0-9"}) == DATA[:10]
        assert proxy.seen[0].method == "CONNECT"
        assert proxy.seen[0].headers["Proxy-Authorization"] == basic("user", "secret")
    assert "Proxy-Authorization" not in secure.seen[0].headers  # the proxy's credentials stay with the proxy


# ------------------------------------------------------------------------------------ stalls


def test_stalled_body_raises_transient(origin: OriginServer, sessions: Sessions) -> None:
    origin.routes["/stall"] = stall(1000, b"x" * 10)
    response = sessions(timeout=0.3).get(origin.url("/stall"), {})
    assert response.status_code == 200
    started = time.monotonic()
    with pytest.raises(Transient, match="stalled"):
        while response.read1(1000):
            pass
    assert 0.25 < time.monotonic() - started < 1.5
    response.close()


def test_no_response_raises_transient(origin: OriginServer, sessions: Sessions) -> None:
    origin.routes["/silent"] = stall(0, headers=False)
    started = time.monotonic()
    with pytest.raises(Transient, match="stalled"):
        sessions(timeout=0.3).get(origin.url("/silent"), {})
    assert time.monotonic() - started < 1.5


# ------------------------------------------------------------------------------------ the downloader

E2E_SIZE = 1024 * 1024 + 12345
E2E_PART = 128 * 1024


@pytest.fixture(scope="module")
def e2e_data() -> bytes:
    return random.Random(5).randbytes(E2E_SIZE)


def _download(url: str, data: bytes, dest: Path, env: dict[str, str]) -> str:
    sleeps: list[float] = []
    digest = download(None, DownloadTarget(url, len(data), sha256_bytes(data)), dest, raw_bodies=True, env=env,
                      parts=4, min_part_size=E2E_PART, stall_timeout=5.0, sleep=sleeps.append)
    assert sleeps == []  # no retries
    assert dest.read_bytes() == data
    return digest


def _part_ranges() -> list[str]:
    return [f"bytes={p.start}-{p.end - 1}" for p in plan_parts(E2E_SIZE, E2E_PART)]


def _by_start(ranges: list[str]) -> list[str]:
    return sorted(ranges, key=lambda r: int(r[len("bytes="):].split("-")[0]))


@pytest.mark.usefixtures("no_env_proxies")
def test_download_through_http_proxy(proxy: ForwardProxy, e2e_data: bytes, tmp_path: Path) -> None:
    with OriginServer({"/model.bin": blob(e2e_data)}) as srv:
        digest = _download(srv.url("/model.bin"), e2e_data, tmp_path / "model.bin", {"HTTP_PROXY": proxy.url})
    assert digest == sha256_bytes(e2e_data)
    assert len(_part_ranges()) > 4
    assert _by_start([r for r in proxy.ranges() if r != PROBE_RANGE]) == _part_ranges()


@pytest.mark.usefixtures("no_env_proxies")
@pytest.mark.parametrize("through_proxy", [False, True])
def test_download_https_trusting_ssl_cert_file(
    tls: TLS, proxy: ForwardProxy, e2e_data: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    through_proxy: bool,
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca_file))  # read by httpx.create_ssl_context(trust_env=True)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    env = {"HTTPS_PROXY": proxy.url} if through_proxy else {}
    with OriginServer({"/model.bin": blob(e2e_data)}, tls=tls.server_context()) as srv:
        digest = _download(srv.url("/model.bin"), e2e_data, tmp_path / "model.bin", env)
    assert digest == sha256_bytes(e2e_data)
    parts = [s for s in srv.seen if s.headers.get("Range") != PROBE_RANGE]
    assert _by_start([s.headers["Range"] for s in parts]) == _part_ranges()
    assert all("Accept" not in s.headers for s in parts)  # sent by http.client (httpx adds "Accept: */*")
    if through_proxy:
        assert proxy.seen and {s.method for s in proxy.seen} == {"CONNECT"}
    else:
        assert proxy.seen == []


@pytest.mark.usefixtures("no_env_proxies")
def test_download_falls_back_to_httpx_when_a_redirect_needs_another_proxy(
    tls: TLS, e2e_data: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca_file))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with OriginServer({"/model.bin": blob(e2e_data)}, tls=tls.server_context()) as cdn, \
            OriginServer({"/model.bin": redirect(cdn.url("/model.bin"))}) as origin:
        # The raw sessions may not go to the https CDN directly (its proxy would be bypassed): the
        # workers switch to httpx, which reaches it (httpx's own proxy settings come from os.environ).
        digest = _download(origin.url("/model.bin"), e2e_data, tmp_path / "model.bin",
                           {"HTTPS_PROXY": "socks5://127.0.0.1:9"})
    assert digest == sha256_bytes(e2e_data)
    parts = [s for s in cdn.seen if s.headers.get("Range") != PROBE_RANGE]
    assert _by_start([s.headers["Range"] for s in parts]) == _part_ranges()
    assert all(s.headers.get("Accept") == "*/*" for s in parts)  # sent by httpx, not http.client
