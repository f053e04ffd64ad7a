"""``slmctl serve --read-only-store``: the routes that would write the model store answer 403 before they run.

Owns the list of store-writing routes (pull, push, create, copy, delete, blob uploads) and the ASGI
middleware that refuses them in the API's own error shape (Ollama's ``{"error": ...}``; OpenAI's error object
under ``/v1``, which has no such route today). The store itself refuses changes too
(:class:`~slmctl.errors.StoreReadOnly` from a store opened read-only): this layer answers first, with a
reason, before a body is read.
"""

from __future__ import annotations

from typing import Any

from slmctl.server.errors import error_response

#: (path or path prefix, what it does): the routes that change the store; reading (HEAD a blob) is allowed.
WRITES: tuple[tuple[str, str], ...] = (
    ("/api/pull", "pulling a model"),
    ("/api/push", "pushing a model"),
    ("/api/create", "creating a model"),
    ("/api/copy", "copying a model"),
    ("/api/delete", "deleting a model"),
    ("/api/blobs/", "uploading a blob"),
)
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def refused(method: str, path: str) -> str | None:
    """What a request would do to the store (None: it does not write it)."""
    if method not in _WRITE_METHODS:
        return None
    path = path.rstrip("/") if path != "/" else path
    for prefix, what in WRITES:
        if path == prefix or (prefix.endswith("/") and path.startswith(prefix)):
            return what
    return None


class ReadOnlyStore:
    """ASGI middleware: 403 for every store-writing route (see :data:`WRITES`)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        what = refused(scope.get("method", ""), scope.get("path", "")) if scope["type"] == "http" else None
        if what is None:
            await self.app(scope, receive, send)
            return
        message = (f"{what} is not allowed: this server reads its model store read-only (--read-only-store); "
                   "pull models into the shared store with the pull Job ('slmctl pull MODEL')")
        response = error_response(403, message, path=scope["path"], code="store_read_only")
        await response(scope, receive, send)
