"""HTTPS for ``slmctl serve``: uvicorn's own TLS (``ssl_certfile``/``ssl_keyfile``, checked before start by
:mod:`slmctl.security.config`), plus the one thing it lacks at shutdown.

asyncio closes a TLS connection by sending ``close_notify`` and waiting - up to 30 seconds - for the
client's; a client that keeps an idle pooled connection open (every HTTP library does) never answers,
so a draining server would wait out its whole grace period for connections with nothing in flight.
:func:`abort_idle` drops those at once, as a plain-TCP close does; connections serving a request are
left to finish (they answer with ``Connection: close``, and their clients hang up).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def abort_idle(connections: Iterable[Any]) -> int:
    """Abort the TLS connections of uvicorn's ``server_state.connections`` that have no request in
    flight; returns how many."""
    aborted = 0
    for connection in list(connections):
        transport = getattr(connection, "transport", None)
        if transport is None or transport.get_extra_info("sslcontext") is None:
            continue
        cycle = getattr(connection, "cycle", None)
        if cycle is None or getattr(cycle, "response_complete", False):
            transport.abort()
            aborted += 1
    return aborted
