"""Prometheus metrics of a real ``slmctl serve``: ``/metrics`` parses with prometheus-client's own parser,
and its counters, histograms and gauges move as requests are served (the queue gauge included, with
``--parallel 1`` and a long generation holding the model).
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serve_fixtures import Served
from waiting import wait_for
from slmctl.server.config import ServeConfig
from slmctl.server.metrics import Metrics, record_auth_failure

MINI, LONG_NAME = "phi4:mini", "long:latest"  # names as the store writes them
LONG = {"model": "long", "prompt": "tell me everything", "options": {"num_ctx": 32768, "num_predict": 30000}}


@pytest.fixture(scope="module")
def served(serve_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    server = Served(serve_home, "--parallel", "1", log_dir=tmp_path_factory.mktemp("metrics-logs"))
    yield server
    server.stop()


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape: (name, labels) -> value."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(server: Served, path: str = "/metrics") -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = httpx.get(server.url + path, timeout=30)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def generate(server: Served, model: str = "phi4:mini", n: int = 4) -> httpx.Response:
    return httpx.post(f"{server.url}/api/generate", json={"model": model, "prompt": "hi", "stream": False,
                                                          "options": {"num_predict": n}}, timeout=120)


def test_both_paths_parse_and_name_the_expected_families(served: Served) -> None:
    names = {f.name for f in text_string_to_metric_families(httpx.get(served.url + "/api/metrics").text)}
    assert {"slmctl_http_requests", "slmctl_http_request_duration_seconds", "slmctl_time_to_first_token_seconds",
            "slmctl_time_per_output_token_seconds", "slmctl_generation_tokens_per_second", "slmctl_prompt_tokens",
            "slmctl_prompt_cached_tokens",
            "slmctl_generated_tokens", "slmctl_requests_waiting", "slmctl_requests_running",
            "slmctl_models_loaded", "slmctl_model_memory_bytes", "slmctl_runner_restarts", "slmctl_auth_failures",
            "process_resident_memory_bytes"} <= names
    assert scrape(served, "/api/metrics")


def test_request_and_generation_metrics_move_as_requests_are_served(served: Served) -> None:
    assert generate(served).status_code == 200  # loaded before the baseline: later requests count the same
    before = scrape(served)
    for _ in range(3):
        assert generate(served).status_code == 200
    assert httpx.post(f"{served.url}/api/generate", json={"model": "nosuch", "prompt": "hi"}).status_code == 404
    assert httpx.get(f"{served.url}/no/such/path/42").status_code == 404
    after = scrape(served)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("slmctl_http_requests_total", method="POST", route="/api/generate", status="200") == 3
    assert moved("slmctl_http_requests_total", method="POST", route="/api/generate", status="404") == 1
    assert moved("slmctl_http_requests_total", method="GET", route="other", status="404") == 1
    assert moved("slmctl_http_requests_total", method="GET", route="/metrics", status="200") == 1  # the first scrape
    assert moved("slmctl_http_request_duration_seconds_count", route="/api/generate") == 4
    assert moved("slmctl_generated_tokens_total", model=MINI) == 12
    assert moved("slmctl_prompt_tokens_total", model=MINI) >= 3
    # the same prompt three times: each one after the first finds it in the prefix cache (all but its last token)
    assert 0 < moved("slmctl_prompt_cached_tokens_total", model=MINI) < moved("slmctl_prompt_tokens_total", model=MINI)
    for histogram in ("slmctl_time_to_first_token_seconds", "slmctl_time_per_output_token_seconds",
                      "slmctl_generation_tokens_per_second"):
        assert moved(f"{histogram}_count", model=MINI) == 3, histogram
        assert moved(f"{histogram}_sum", model=MINI) > 0, histogram
    assert not any("/no/such" in dict(labels).get("route", "") for _, labels in after)  # bounded labels
    assert value(after, "slmctl_models_loaded") >= 1
    assert value(after, "slmctl_model_memory_bytes", model=MINI, device="cpu", memory="ram") > 0
    assert value(after, "slmctl_model_memory_bytes", model=MINI, device="cpu", memory="vram") == 0


def test_queue_gauges_count_waiting_and_running_requests(served: Served) -> None:
    with httpx.Client(timeout=120) as first_client:
        request = first_client.build_request("POST", f"{served.url}/api/generate", json=LONG)
        first = first_client.send(request, stream=True)
        lines = first.iter_lines()  # kept: a dropped line iterator would close the stream
        assert json.loads(next(lines))["done"] is False  # running: it holds the only slot
        second: dict[str, int] = {}

        def queued() -> None:  # waits behind the first until that one is cancelled
            second["status"] = httpx.post(f"{served.url}/api/generate", json={**LONG, "stream": False, "options": {
                "num_ctx": 32768, "num_predict": 2}}, timeout=120).status_code

        thread = threading.Thread(target=queued)
        thread.start()
        wait_for(lambda: value(scrape(served), "slmctl_requests_waiting", model=LONG_NAME) == 1, "a waiting request", interval=0.1)
        assert value(scrape(served), "slmctl_requests_running", model=LONG_NAME) == 1
        first.close()  # the client leaves: its generation stops, the waiting one runs
        thread.join(timeout=120)
    assert second["status"] == 200
    wait_for(lambda: value(scrape(served), "slmctl_requests_running", model=LONG_NAME) == 0, "an idle model", interval=0.1)
    assert value(scrape(served), "slmctl_requests_waiting", model=LONG_NAME) == 0


def test_a_restarted_runner_is_counted(served: Served) -> None:
    assert generate(served).status_code == 200
    before = value(scrape(served), "slmctl_runner_restarts_total", model=MINI)
    for pid in served.runner_pids():
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not httpx.get(f"{served.url}/api/ps").json()["models"], "the crashed runners to be dropped", interval=0.1)
    assert generate(served).status_code == 200
    assert value(scrape(served), "slmctl_runner_restarts_total", model=MINI) == before + 1


def test_auth_failures_are_counted_with_bounded_reasons() -> None:
    metrics = Metrics(ServeConfig())
    app = SimpleNamespace(state=SimpleNamespace(metrics=metrics))
    for reason in ("invalid_key", "invalid_key", "missing_key", "sk-secret-looking-thing"):
        record_auth_failure(app, reason)
    record_auth_failure(SimpleNamespace(state=SimpleNamespace()), "invalid_key")  # no metrics: nothing to do
    samples = parse(metrics.render().decode())
    assert value(samples, "slmctl_auth_failures_total", reason="invalid_key") == 2
    assert value(samples, "slmctl_auth_failures_total", reason="missing_key") == 1
    assert value(samples, "slmctl_auth_failures_total", reason="other") == 1
    assert not any("sk-secret" in str(labels) for _, labels in samples)
