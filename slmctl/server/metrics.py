"""Prometheus metrics: ``GET /metrics`` and ``GET /api/metrics`` (Foundry Local's path) in the text format.

One registry per application (:class:`Metrics`, at ``app.state.metrics``). What it counts:

- HTTP requests by method, route template and status, and their latency (the access-log middleware
  calls :meth:`Metrics.request`);
- per model: time to first token, time per generated token, tokens per second, prompt and generated
  tokens (the serving layer's ``on_generation`` hook, when a generation ends);
- read from the scheduler at scrape time: requests waiting (``slmctl_requests_waiting``, the gauge an
  autoscaler reads) and running per model, loaded models and their memory (RAM and VRAM);
- runner restarts (a model loaded again after its runner process died) and auth failures
  (:func:`record_auth_failure`, called by the auth layer); the process's own CPU, memory and file
  descriptors.

Labels stay bounded: route templates (never raw paths), model names from the store (never from a
request), a fixed set of auth-failure reasons, no prompt and no key. The metrics need no API key unless
``--metrics-auth``: then :func:`require_key` answers 401 to a request the auth layer has not tied to a key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from slmctl.backends.base import Stats
from slmctl.engine import LoadPlan
from slmctl.engine.runner import Runner
from slmctl.server.config import ServeConfig
from slmctl.server.errors import error_response

PATHS = ("/metrics", "/api/metrics")
#: Why the auth layer refused a request (the ``reason`` label); anything else is counted as ``other``.
AUTH_REASONS = frozenset({"missing_key", "invalid_key", "expired_key", "forbidden", "other"})
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_PER_TOKEN = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_RATES = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)

router = APIRouter()


def capacity(plan: LoadPlan, runner: Runner) -> int:
    """Requests a loaded model runs at once: its slots on GGUF text models (continuous batching), else 1."""
    slots = getattr(runner, "slots", None)
    return slots if slots and plan.format == "gguf" and not plan.embedding else 1


def crashed(runner: Runner) -> bool:
    """A runner that stopped without being asked to (its process died)."""
    return not runner.alive and not getattr(runner, "_closing", False)


class SchedulerCollector:
    """The gauges read from the scheduler (and the HTTP layer) at each scrape."""

    def __init__(self, scheduler: Any, state: Any) -> None:
        self.scheduler, self.state = scheduler, state

    def describe(self) -> Iterator[Any]:
        return iter(self._families())

    def _families(self) -> tuple[Any, ...]:
        from prometheus_client.core import GaugeMetricFamily

        return (GaugeMetricFamily("slmctl_requests_waiting", "Requests queued for a model, not yet running",
                                  labels=["model"]),
                GaugeMetricFamily("slmctl_requests_running", "Requests a model is working on", labels=["model"]),
                GaugeMetricFamily("slmctl_http_requests_in_flight", "HTTP requests being answered"),
                GaugeMetricFamily("slmctl_models_loaded", "Models loaded"),
                GaugeMetricFamily("slmctl_model_memory_bytes", "Memory a loaded model takes, by kind (ram, vram)",
                                  labels=["model", "device", "memory"]))

    def collect(self) -> Iterator[Any]:
        waiting, running, in_flight, loaded, memory = self._families()
        queues: dict[str, list[int]] = {}
        sizes: dict[tuple[str, str, str], int] = {}
        entries = self.scheduler.loaded()
        for entry in entries:
            plan, runner = entry.plan, entry.runner
            pending, slots = runner.pending, capacity(plan, runner)
            counts = queues.setdefault(plan.model, [0, 0])
            counts[0] += max(0, pending - slots)
            counts[1] += min(pending, slots)
            device = getattr(getattr(runner, "info", None), "device", plan.device)
            vram = plan.size if device != "cpu" else 0
            for kind, size in (("ram", plan.size - vram), ("vram", vram)):
                sizes[(plan.model, device, kind)] = sizes.get((plan.model, device, kind), 0) + size
        for model, (queued, busy) in sorted(queues.items()):
            waiting.add_metric([model], queued)
            running.add_metric([model], busy)
        for labels, size in sorted(sizes.items()):
            memory.add_metric(list(labels), size)
        in_flight.add_metric([], getattr(self.state, "in_flight", 0))
        loaded.add_metric([], len(entries))
        return iter((waiting, running, in_flight, loaded, memory))


class Metrics:
    """The application's registry and the metrics the server updates as it works."""

    def __init__(self, config: ServeConfig) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector

        self.config = config
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        self.requests = Counter("slmctl_http_requests", "HTTP requests answered, by method, route and status",
                                ["method", "route", "status"], registry=registry)
        self.latency = Histogram("slmctl_http_request_duration_seconds", "Time to answer a request, whole "
                                 "body included (streams too)", ["route"], buckets=_SECONDS, registry=registry)
        self.ttft = Histogram("slmctl_time_to_first_token_seconds", "Time from a generation's start to its "
                              "first token", ["model"], buckets=_SECONDS, registry=registry)
        self.per_token = Histogram("slmctl_time_per_output_token_seconds", "Mean time per generated token of "
                                   "a generation", ["model"], buckets=_PER_TOKEN, registry=registry)
        self.speed = Histogram("slmctl_generation_tokens_per_second", "Generated tokens per second of a "
                               "generation", ["model"], buckets=_RATES, registry=registry)
        self.prompt_tokens = Counter("slmctl_prompt_tokens", "Prompt tokens read", ["model"], registry=registry)
        self.prompt_cached_tokens = Counter("slmctl_prompt_cached_tokens", "Prompt tokens reused from the prefix "
                                            "cache instead of evaluated (hit rate: this over slmctl_prompt_tokens)",
                                            ["model"], registry=registry)
        self.generated_tokens = Counter("slmctl_generated_tokens", "Tokens generated", ["model"],
                                        registry=registry)
        self.restarts = Counter("slmctl_runner_restarts", "Models loaded again after their runner process "
                                "died", ["model"], registry=registry)
        self.auth_failures = Counter("slmctl_auth_failures", "Requests refused by API-key checks, by reason",
                                     ["reason"], registry=registry)
        self._runners: dict[tuple[Any, ...], Runner] = {}

    def attach(self, serving: Any, state: Any) -> None:
        """Read the scheduler at scrape time, and count each generation as it ends."""
        self.registry.register(SchedulerCollector(serving.scheduler, state))
        serving.on_generation.append(self.generation)

    # -- updates -----------------------------------------------------------------------------------
    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def generation(self, model: str, stats: Stats) -> None:
        if stats.time_to_first_token:
            self.ttft.labels(model).observe(stats.time_to_first_token / 1e9)
        if stats.eval_count and stats.eval_duration:
            self.per_token.labels(model).observe(stats.eval_duration / 1e9 / stats.eval_count)
            self.speed.labels(model).observe(stats.eval_rate)
        self.prompt_tokens.labels(model).inc(stats.prompt_eval_count)
        self.prompt_cached_tokens.labels(model).inc(stats.prompt_cached_count)
        self.generated_tokens.labels(model).inc(stats.eval_count)

    def auth_failure(self, reason: str) -> None:
        self.auth_failures.labels(reason if reason in AUTH_REASONS else "other").inc()

    def watch(self, factory: Callable[[LoadPlan], Runner]) -> Callable[[LoadPlan], Runner]:
        """``factory`` (the scheduler's runner factory), counting a load whose previous runner crashed."""
        def start(plan: LoadPlan) -> Runner:
            runner = factory(plan)
            previous = self._runners.get(plan.key)
            if previous is not None and crashed(previous):
                self.restarts.labels(plan.model).inc()
            self._runners[plan.key] = runner
            return runner

        return start

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


def record_auth_failure(app: Any, reason: str) -> None:
    """For the auth layer: count a refused request (``reason``: one of :data:`AUTH_REASONS`). ``app`` is
    ``request.app`` in a route, ``scope["app"]`` in an ASGI middleware."""
    metrics: Metrics | None = getattr(app.state, "metrics", None)
    if metrics is not None:
        metrics.auth_failure(reason)


def open_paths(config: ServeConfig) -> tuple[str, ...]:
    """For the auth layer: the metrics paths it lets through without a key (none with --metrics-auth)."""
    return () if config.metrics_auth else PATHS


def require_key(http: Request) -> Any:
    """With ``--metrics-auth``: a 401 for a request the auth layer has not tied to an API key (it sets
    ``request.state.key_name``), else None. Any key's role may read the metrics."""
    metrics: Metrics = http.app.state.metrics
    if metrics.config.metrics_auth and not getattr(http.state, "key_name", None):
        return error_response(401, "the metrics need an API key (the server runs with --metrics-auth)",
                              {"WWW-Authenticate": "Bearer"}, path=http.url.path, code="invalid_api_key")
    return None


@router.get("/metrics", response_class=PlainTextResponse)
@router.get("/api/metrics", response_class=PlainTextResponse)
async def scrape(http: Request) -> Any:
    refused = require_key(http)
    if refused is not None:
        return refused
    from prometheus_client import CONTENT_TYPE_LATEST

    metrics: Metrics = http.app.state.metrics
    body = await http.app.state.serving.run(metrics.render)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
