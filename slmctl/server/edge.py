"""The order of the guard, limit and log layers around the application (Starlette runs the middleware
added last first).

From the outside in: the access log (it sees every answer, refusals included, and gives the request its
id), the Host guard of a loopback server, CORS (so browsers can read even refusals), then the server's
own layers - draining, API-key auth - then the rate limit (after auth has named the key), the request
timeout, the body limit, and right above the routes the recorder of the route template.
:func:`install_innermost` is called before any other middleware is added, :func:`install_inner` before
the auth middleware, :func:`install_outer` after it.
"""

from __future__ import annotations

from typing import Any

from slmctl.server.access_log import AccessLog, RecordRoute
from slmctl.server.config import ServeConfig
from slmctl.security.config import is_loopback
from slmctl.server.guards import HostGuard, RateLimit, add_cors
from slmctl.server.limits import Timeout


def install_innermost(app: Any) -> None:
    """What sits right above the routes: the route-template recorder of the access log and metrics."""
    app.add_middleware(RecordRoute)


def install_inner(app: Any, config: ServeConfig) -> None:
    """The request timeout, then (outside it) the rate limit."""
    if config.request_timeout:
        app.add_middleware(Timeout, seconds=config.request_timeout)
    if config.rate_limit:
        app.add_middleware(RateLimit, per_minute=config.rate_limit)


def install_outer(app: Any, config: ServeConfig, metrics: Any) -> None:
    """CORS, the Host guard (on a loopback address only), and outermost the access log."""
    add_cors(app, config.origins)
    if is_loopback(config.host):
        app.add_middleware(HostGuard)
    app.add_middleware(AccessLog, metrics=metrics)
