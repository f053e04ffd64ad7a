"""The FastAPI application, its lifespan, and the uvicorn server that runs it.

Start-up builds the engine and a scheduler with runner processes, then loads the ``--preload`` models
in the background (``/readyz`` says when they are in). SIGTERM/SIGINT: new requests get 503, requests
in flight get ``grace`` seconds to finish, the runners stop, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from fastapi import FastAPI

from slmctl import __version__
from slmctl.devices import DEFAULT_PREFERENCE
from slmctl.engine import Engine, LoadPlan, Scheduler, SchedulerSettings
from slmctl.engine.runner import Runner
from slmctl.server import access_log, edge, errors, health, metrics, ollama_models, ollama_routes, openai_routes
from slmctl.server import security, tls
from slmctl.server.config import ServeConfig
from slmctl.server.serving import Serving
from slmctl.settings import Settings

log = logging.getLogger("slmctl.server")
#: Paths that answer while the server drains (probes must see it).
_ALWAYS = ("/api/health", "/livez", "/readyz")


class Draining:
    """ASGI middleware: count requests in flight; once draining, refuse new ones with 503."""

    def __init__(self, app: Any, state: Any) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.state.draining and not scope["path"].startswith(_ALWAYS):
            response = errors.error_response(503, "the server is shutting down", {"Retry-After": "5"},
                                             path=scope["path"], code="server_shutting_down")
            await response(scope, receive, send)
            return
        self.state.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.state.in_flight -= 1


async def _preload(app: FastAPI) -> None:
    serving: Serving = app.state.serving
    for name in app.state.preload:
        try:
            if serving.config.pull_missing:
                await serving.run(_pull_missing, serving, name)
            target = await serving.run(serving.target, name, None, None)
            await serving.load(target)
            app.state.preloaded.add(name)
            log.info("preloaded %s", name)
        except Exception as error:  # noqa: BLE001 - reported by /readyz and the log
            app.state.preload_errors[name] = str(error)
            log.error("could not preload %s: %s", name, error)


def _pull_missing(serving: Serving, name: str) -> None:
    """Pull a ``--preload`` model the store lacks (``--pull-missing``, a config file's ``deployment.model``)."""
    from slmctl.names import parse_model_ref
    from slmctl.services.pull import ensure_model

    if not serving.engine.store.exists(parse_model_ref(name)):
        log.info("pulling %s (not in the store)", name)
        ensure_model(serving.engine.store, serving.settings, name, env=serving.env)


def create_app(config: ServeConfig, settings: Settings, env: Mapping[str, str], *,
               engine: Engine | None = None) -> FastAPI:
    engine = engine or Engine(_store(settings, config), preference=config.device or DEFAULT_PREFERENCE)
    loops: list[asyncio.AbstractEventLoop] = []  # the server's event loop, once it runs

    def runner_process(plan: LoadPlan) -> Runner:
        from slmctl.engine.process_runner import ProcessRunner

        return ProcessRunner(plan, load_timeout=scheduler.settings.load_timeout, loop=loops[0] if loops else None,
                             slots=config.slots(plan.device))

    meter = metrics.Metrics(config)  # before the scheduler: it counts runner restarts
    scheduler = Scheduler(SchedulerSettings(keep_alive=config.keep_alive, max_loaded=config.max_loaded,
                                            parallel=config.slots("cpu"), max_queue=config.queue,
                                            isolate=config.isolate, batching=True),
                          runner_factory=meter.watch(runner_process) if config.isolate else None)
    serving = Serving(engine, scheduler, config, settings, env)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loops.append(asyncio.get_running_loop())
        log.info("slmctl %s serving on %s:%d (store: %s%s)", __version__, config.host, config.port,
                 settings.models_dir, ", read-only" if config.read_only_store else "")
        preload = asyncio.create_task(_preload(app))
        try:
            yield
        finally:
            app.state.draining = True
            preload.cancel()
            await asyncio.get_running_loop().run_in_executor(None, scheduler.close)
            serving.close()
            log.info("stopped")

    app = FastAPI(title="slmctl", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.serving = serving
    app.state.draining = False
    app.state.in_flight = 0
    app.state.preload = list(config.preload)
    app.state.preloaded = set()
    app.state.preload_errors = {}
    app.state.metrics = meter
    meter.attach(serving, app.state)
    errors.install(app)
    for router in (health.router, ollama_routes.router, ollama_models.router, metrics.router):
        app.include_router(router)
    if config.openai:  # else /v1 answers 404 (a config file's deployment.api.openai_compatible: false)
        app.include_router(openai_routes.router)
    edge.install_innermost(app)  # the route template, for the access log and the metrics
    app.add_middleware(errors.AssumeJson)
    app.add_middleware(errors.AssumeJson, prefix="/v1/", exempt=())
    app.add_middleware(errors.BodyLimit, limit=config.max_body, exempt=("/api/blobs/",))
    if config.read_only_store:
        from slmctl.server.store_guard import ReadOnlyStore

        app.add_middleware(ReadOnlyStore)  # 403 for pull, create, copy, delete, blobs (inside auth: 401 first)
    edge.install_inner(app, config)  # rate limit, request timeout: API-key auth goes outside them (after this)
    security.install(app, config, settings)  # API keys and roles, the audit log (and GET /api/audit)
    app.add_middleware(Draining, state=app.state)
    edge.install_outer(app, config, meter)  # CORS, Host guard, access log: outermost (auth goes before this)
    return app


def _store(settings: Settings, config: ServeConfig) -> Any:
    from slmctl.store import ModelStore

    return ModelStore(settings.models_dir, read_only=config.read_only_store)


#: Seconds an idle keep-alive connection stays open. Longer than clients keep theirs (httpx, so the openai and
#: ollama SDKs: 5 s), so a client never sends a request on a connection the server is closing at that very
#: moment (uvicorn's default is 5 s too: under load, a POST then fails with a bare ReadError).
KEEP_ALIVE_S = 75


def serve(config: ServeConfig, settings: Settings, env: Mapping[str, str], *, log_level: str = "info") -> None:
    """Run the server until SIGTERM/SIGINT; returns normally after a graceful stop."""
    import uvicorn

    app = create_app(config, settings, env)
    uv_config = uvicorn.Config(app, host=config.host, port=config.port, log_level=log_level,
                               ssl_certfile=config.security.tls_cert, ssl_keyfile=config.security.tls_key,
                               timeout_graceful_shutdown=max(1, int(config.grace)), lifespan="on",
                               timeout_keep_alive=KEEP_ALIVE_S, server_header=False,
                               **access_log.configure(config.log_format))
    _graceful_server(uv_config, app).run()


def _graceful_server(config: Any, app: FastAPI) -> Any:
    """uvicorn's server, with signal handling that drains and exits 0 (uvicorn re-raises the signal)."""
    import uvicorn

    class GracefulServer(uvicorn.Server):
        @contextmanager
        def capture_signals(self) -> Any:
            if threading.current_thread() is not threading.main_thread():
                yield
                return

            def stop(sig: int, _frame: Any) -> None:
                if app.state.draining and sig == signal.SIGINT:
                    self.force_exit = True  # a second Ctrl-C: stop waiting
                app.state.draining = True
                log.info("received %s: draining (up to %ss)", signal.Signals(sig).name,
                         config.timeout_graceful_shutdown)
                self.should_exit = True

            previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

        async def shutdown(self, sockets: Any = None) -> None:
            tls.abort_idle(self.server_state.connections)  # else each idle TLS client holds the drain 30 s
            await super().shutdown(sockets)

    return GracefulServer(config)
