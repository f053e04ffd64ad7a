"""The guards of a real ``slmctl serve`` on loopback: Host check, CORS, body limit, rate limit, token and
context caps, request timeout, request ids and the access log (plain and JSON).

Each server is started as users start it (``python -m slmctl serve``) over the session's tiny models;
the rules under test are pure functions too, checked here without a server (the rate limit's bucket
on a fake clock, the Host names, the origin globs, the option caps).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import openai
import pytest

from serve_fixtures import Served
from slmctl.cli.serve import resolve
from slmctl.errors import UsageError
from slmctl.options import LoadOptions, SamplingOptions
from slmctl.server.config import ServeConfig
from slmctl.security.config import is_loopback as is_loopback_address
from slmctl.server.guards import DEFAULT_ORIGINS, TokenBuckets, is_loopback_host, origin_pattern
from slmctl.server.limits import cap_options
from slmctl.server.serving import Serving

APP = "https://app.example"
LONG = {"model": "long", "prompt": "tell me everything", "options": {"num_ctx": 32768, "num_predict": 30000}}


@pytest.fixture(scope="module")
def guarded(serve_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    server = Served(serve_home, "--origins", APP, "--max-predict", "8", "--max-ctx", "256", "--max-body", "4096",
                    "--log-format", "json", log_dir=tmp_path_factory.mktemp("guard-logs"))
    yield server
    server.stop()


def lines_of(server: Served) -> list[dict[str, Any]]:
    out = []
    for line in server.log().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


# -- Host ----------------------------------------------------------------------------------------------
def test_foreign_host_is_403_in_each_apis_shape_and_loopback_names_are_served(guarded: Served) -> None:
    ollama = httpx.get(f"{guarded.url}/api/tags", headers={"Host": "evil.example"})
    assert ollama.status_code == 403 and "evil.example" in ollama.json()["error"]
    openai_shape = httpx.get(f"{guarded.url}/v1/models", headers={"Host": f"evil.example:{guarded.port}"})
    assert openai_shape.status_code == 403 and openai_shape.json()["error"]["code"] == "host_not_allowed"
    for host in (f"localhost:{guarded.port}", f"127.0.0.1:{guarded.port}", "[::1]", "app.localhost"):
        assert httpx.get(f"{guarded.url}/api/tags", headers={"Host": host}).status_code == 200, host


def test_host_names_and_bind_addresses() -> None:
    assert all(is_loopback_host(h) for h in ("", "localhost", "LOCALHOST:80", "127.0.0.2:1", "[::1]:8", "a.localhost."))
    assert not any(is_loopback_host(h) for h in ("evil.example", "127.0.0.1.evil.example", "10.0.0.1", "[::2]"))
    assert is_loopback_host("build-box:11434", machine="build-box")
    assert is_loopback_address("127.0.0.1") and is_loopback_address("::1") and is_loopback_address("localhost")
    assert not is_loopback_address("0.0.0.0") and not is_loopback_address("192.168.1.4")


# -- CORS ----------------------------------------------------------------------------------------------
def preflight(server: Served, origin: str) -> httpx.Response:
    return httpx.options(f"{server.url}/api/chat", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,authorization"})


def test_cors_preflight_is_allowed_for_listed_and_loopback_origins_and_refused_otherwise(guarded: Served) -> None:
    for origin in (APP, "http://localhost:3000", "vscode-webview://abc"):
        allowed = preflight(guarded, origin)
        assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == origin, origin
        assert "POST" in allowed.headers["access-control-allow-methods"]
    refused = preflight(guarded, "https://evil.example")
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
    simple = httpx.get(f"{guarded.url}/api/version", headers={"Origin": "https://evil.example"})
    assert simple.status_code == 200 and "access-control-allow-origin" not in simple.headers
    listed = httpx.get(f"{guarded.url}/api/version", headers={"Origin": APP})
    assert listed.headers["access-control-allow-origin"] == APP
    assert "x-request-id" in listed.headers["access-control-expose-headers"].lower()


def test_origin_globs() -> None:
    pattern = origin_pattern(DEFAULT_ORIGINS + ("https://*.example.com",))
    assert re.fullmatch(pattern, "https://a.example.com") and re.fullmatch(pattern, "http://127.0.0.1:8080")
    assert not re.fullmatch(pattern, "https://example.com.evil.net") and not re.fullmatch(pattern, "http://evil")
    assert resolve({}, {"OLLAMA_ORIGINS": "https://a, https://b/"}, None).origins == ("https://a", "https://b")
    assert resolve({"origins": ["x"]}, {"OLLAMA_ORIGINS": "y"}, None).origins == ("x",)


def test_guard_settings_resolve_from_flags_environment_and_file(tmp_path: Path) -> None:
    config = tmp_path / "serve.json"
    config.write_text(json.dumps({"rate_limit": 60, "log_format": "json", "max_ctx": 2048, "origins": ["https://a"]}))
    resolved = resolve({"max_ctx": 1024}, {"SLMCTL_REQUEST_TIMEOUT": "5m", "SLMCTL_METRICS_AUTH": "yes"}, config)
    assert (resolved.rate_limit, resolved.log_format, resolved.max_ctx, resolved.request_timeout,
            resolved.metrics_auth, resolved.origins) == (60, "json", 1024, 300.0, True, ("https://a",))
    assert resolve({"rate_limit": 0, "request_timeout": "0"}, {}, None).rate_limit is None
    assert resolve({}, {}, None).request_timeout is None and resolve({}, {}, None).log_format == "plain"
    for flags, message in (({"log_format": "xml"}, "log_format"), ({"request_timeout": "soon"}, "duration"),
                           ({"max_predict": "many"}, "max_predict"), ({"metrics_auth": "maybe"}, "metrics_auth")):
        with pytest.raises(UsageError, match=message):
            resolve(flags, {}, None)


# -- body limit, caps ----------------------------------------------------------------------------------
def test_body_over_the_limit_is_413(guarded: Served) -> None:
    body = {"model": "phi4:mini", "prompt": "x" * 5000}
    assert httpx.post(f"{guarded.url}/api/generate", json=body).status_code == 413
    refused = httpx.post(f"{guarded.url}/v1/completions", json=body)
    assert refused.status_code == 413 and refused.json()["error"]["code"] == "request_too_large"


def test_max_predict_and_max_ctx_are_400_on_the_ollama_api_and_cap_unset_requests(guarded: Served) -> None:
    url = f"{guarded.url}/api/generate"
    over = httpx.post(url, json={"model": "phi4:mini", "prompt": "hi", "options": {"num_predict": 9}}, timeout=60)
    assert over.status_code == 400 and "at most 8" in over.json()["error"]
    wide = httpx.post(url, json={"model": "phi4:mini", "prompt": "hi", "options": {"num_ctx": 512}}, timeout=60)
    assert wide.status_code == 400 and "at most 256" in wide.json()["error"]
    unset = httpx.post(url, json={"model": "phi4:mini", "prompt": "hi", "stream": False}, timeout=60)
    assert unset.status_code == 200 and unset.json()["eval_count"] == 8  # the tiny model never stops by itself
    unlimited = httpx.post(url, json={"model": "phi4:mini", "prompt": "hi", "stream": False,
                                      "options": {"num_predict": -1}}, timeout=60)
    assert unlimited.status_code == 200 and unlimited.json()["eval_count"] == 8


def test_max_predict_and_max_ctx_are_400_on_the_openai_api(guarded: Served) -> None:
    client = openai.OpenAI(base_url=guarded.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="phi4:mini", messages=messages, max_tokens=9)
    assert "at most 8" in caught.value.body["message"] and caught.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="phi4:mini", prompt="hi", max_tokens=100)
    assert "at most 8" in caught.value.body["message"]
    with pytest.raises(openai.BadRequestError) as caught:  # the context is capped: a long prompt overflows it
        client.chat.completions.create(model="phi4:mini", messages=[{"role": "user", "content": "hello " * 300}])
    assert caught.value.body["code"] == "context_length_exceeded" and "holds 256" in caught.value.body["message"]
    answer = client.chat.completions.create(model="phi4:mini", messages=messages)
    assert answer.usage.completion_tokens == 8


def test_caps_as_a_function() -> None:
    config = ServeConfig(max_predict=100, max_ctx=2048)
    load, sampling = cap_options((LoadOptions(num_ctx=0), SamplingOptions(num_predict=-1)), {}, config)
    assert (load.num_ctx, sampling.num_predict) == (2048, 100)
    load, sampling = cap_options((LoadOptions(num_ctx=1024), SamplingOptions(num_predict=50)), {"num_ctx": 1024},
                                 config)
    assert (load.num_ctx, sampling.num_predict) == (1024, 50)
    with pytest.raises(UsageError, match="at most 2048"):
        cap_options((LoadOptions(num_ctx=4096), SamplingOptions()), {"num_ctx": 4096}, config)
    uncapped = (LoadOptions(num_ctx=8192), SamplingOptions(num_predict=-1))
    assert cap_options(uncapped, {"num_ctx": 8192}, ServeConfig()) == uncapped


# -- request ids and the JSON access log ---------------------------------------------------------------
def test_request_id_is_echoed_kept_and_logged_as_json(guarded: Served) -> None:
    fresh = httpx.get(f"{guarded.url}/api/tags")
    assert len(fresh.headers["x-request-id"]) >= 16
    kept = httpx.get(f"{guarded.url}/v1/models/phi4:mini", headers={"X-Request-Id": "trace-42.a"})
    assert kept.headers["x-request-id"] == "trace-42.a"
    odd = httpx.get(f"{guarded.url}/api/tags", headers={"X-Request-Id": "bad id\twith spaces"})
    assert odd.headers["x-request-id"] not in ("bad id\twith spaces", fresh.headers["x-request-id"])
    refused = httpx.get(f"{guarded.url}/api/tags", headers={"Host": "evil.example", "X-Request-Id": "evil-1"})
    assert refused.status_code == 403 and refused.headers["x-request-id"] == "evil-1"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = {line.get("request_id"): line for line in lines_of(guarded)}
        if {"trace-42.a", "evil-1", fresh.headers["x-request-id"]} <= set(found):
            break
        time.sleep(0.1)
    line = found["trace-42.a"]
    assert line["route"] == "/v1/models/{model:path}" and line["path"] == "/v1/models/phi4:mini"
    assert line["status"] == 200 and line["method"] == "GET" and line["client"] == "127.0.0.1"
    assert line["logger"] == "slmctl.access" and line["duration_ms"] >= 0 and line["bytes"] > 0
    assert found["evil-1"]["status"] == 403
    assert any(entry.get("logger") == "slmctl.server" and "message" in entry for entry in lines_of(guarded))


# -- rate limit, plain access log, metrics auth ---------------------------------------------------------
def test_rate_limit_is_429_with_retry_after_and_probes_are_not_counted(serve_home: Path, tmp_path: Path) -> None:
    server = Served(serve_home, "--rate-limit", "3", "--metrics-auth", log_dir=tmp_path)
    try:
        for _ in range(5):
            assert httpx.get(f"{server.url}/api/health").status_code == 200
        answers = [httpx.get(f"{server.url}/api/tags", headers={"X-Request-Id": f"r{i}"}) for i in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 200]
        refused = httpx.get(f"{server.url}/api/tags")
        assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 20
        assert "3 requests per minute" in refused.json()["error"]
        on_v1 = httpx.get(f"{server.url}/v1/models")
        assert on_v1.status_code == 429 and on_v1.json()["error"]["type"] == "rate_limit_error"
        metrics = httpx.get(f"{server.url}/metrics")  # not rate limited; --metrics-auth and no key: 401
        assert metrics.status_code == 401 and metrics.headers["www-authenticate"] == "Bearer"
        log = server.log()
        assert '"GET /api/tags" 200' in log and "id=r2" in log and '"GET /api/tags" 429' in log
    finally:
        server.stop()


def test_token_bucket_refills_at_the_rate_and_names_the_wait() -> None:
    now = [0.0]
    buckets = TokenBuckets(6, clock=lambda: now[0])  # one request every 10 s, bursts of 6
    assert [buckets.take("a") for _ in range(6)] == [0.0] * 6
    assert buckets.take("a") == pytest.approx(10.0)
    assert buckets.take("b") == 0.0  # keys are independent
    now[0] = 5.0
    assert buckets.take("a") == pytest.approx(5.0)
    now[0] = 10.0
    assert buckets.take("a") == 0.0 and buckets.take("a") == pytest.approx(10.0)
    small = TokenBuckets(1, clock=lambda: now[0], max_keys=2)
    for key in ("x", "y", "z"):
        small.take(key)
    assert small.take("z") > 0 and small.take("x") == 0.0  # "x" was forgotten: bounded memory


# -- request timeout ------------------------------------------------------------------------------------
def sse_data(response: httpx.Response) -> list[str]:
    return [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]


def test_request_timeout_ends_streams_with_an_error_and_answers_504(private_home: Path, tmp_path: Path) -> None:
    server = Served(private_home, "--request-timeout", "1s", "--parallel", "1", log_dir=tmp_path)
    try:
        url = server.url
        created = httpx.post(f"{url}/api/create", json={"model": "long32", "from": "long", "stream": False,
                                                         "parameters": {"num_ctx": 32768}}, timeout=120)
        assert created.status_code == 200, created.text
        httpx.post(f"{url}/api/generate", json={"model": "long32", "prompt": ""}, timeout=120)  # may run over
        deadline = time.monotonic() + 60  # the limit: the load goes on, and the model stays loaded
        while time.monotonic() < deadline and not httpx.get(f"{url}/api/ps").json()["models"]:
            time.sleep(0.2)
        body = {"model": "long32", "prompt": "tell me everything", "options": {"num_predict": 30000}}
        with httpx.stream("POST", f"{url}/api/generate", json=body, timeout=120) as response:
            assert response.status_code == 200
            lines = [json.loads(line) for line in response.iter_lines() if line]
        assert lines[0]["done"] is False and "--request-timeout" in lines[-1]["error"]
        plain = httpx.post(f"{url}/api/generate", json={**body, "stream": False}, timeout=120)
        assert plain.status_code == 504 and "time limit of 1 s" in plain.json()["error"]
        chat = {"model": "long32", "max_tokens": 30000, "messages": [{"role": "user", "content": "go on"}]}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json={**chat, "stream": True}, timeout=120) as sse:
            assert sse.status_code == 200
            events = sse_data(sse)
        assert json.loads(events[0])["choices"][0]["delta"] is not None
        assert json.loads(events[-1])["error"]["code"] == "timeout" and "[DONE]" not in events
        on_v1 = httpx.post(f"{url}/v1/chat/completions", json=chat, timeout=120)
        assert on_v1.status_code == 504 and on_v1.json()["error"]["code"] == "timeout"
        # Each cut generation freed the model: a short answer comes back. Under the other test workers' load
        # its prompt alone can take over the 1 s limit; a model still held by a cut generation never answers.
        for _ in range(3):
            short = httpx.post(f"{url}/api/generate", json={**body, "stream": False, "options": {"num_predict": 3}},
                               timeout=120)
            if short.status_code != 504:
                break
        assert short.status_code == 200 and short.json()["eval_count"] == 3, short.text
    finally:
        server.stop()


def test_a_request_cancelled_while_its_model_loads_releases_the_model_once_loaded() -> None:
    loaded, released = threading.Event(), threading.Event()

    class Scheduler:
        def acquire(self, plan: object, keep_alive: object) -> tuple[object, int]:
            loaded.wait(30)  # a slow load
            return SimpleNamespace(release=released.set), 0

    serving = Serving(None, Scheduler(), ServeConfig(), None, {})  # type: ignore[arg-type]

    async def cancel_during_the_load() -> bool:
        task = asyncio.create_task(serving.acquire(SimpleNamespace(plan=None, keep_alive="default")))
        await asyncio.sleep(0)
        task.cancel()  # the client left, or --request-timeout ran out
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not released.is_set()
        loaded.set()
        return await asyncio.get_running_loop().run_in_executor(None, released.wait, 30)

    try:
        assert asyncio.run(cancel_during_the_load())
    finally:
        serving.close()
