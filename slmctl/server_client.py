"""A small client of a running ``slmctl serve`` (for ``ps`` and ``stop``): where it is, and its errors
mapped back onto the exception hierarchy (no server: :class:`~slmctl.errors.ServerNotRunning`, exit 5)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from slmctl.errors import ModelNotFound, OperationFailed, ServerBusy, ServerNotRunning, SlmctlError, UsageError
from slmctl.settings import client_base_url


class ServerClient:
    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServerClient:
        return cls(client_base_url(os.environ if env is None else env))

    def get(self, path: str) -> Any:
        return self._request("GET", path)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._request("POST", path, body)

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        import httpx

        try:
            response = httpx.request(method, self.base_url + path, json=body, timeout=self.timeout, trust_env=False)
        except httpx.TransportError as exc:
            raise ServerNotRunning(f"no slmctl server answers at {self.base_url} ({type(exc).__name__})",
                                   "start one with 'slmctl serve', or set SLMCTL_HOST to its address") from None
        if response.status_code >= 400:
            raise _error(response)
        return response.json() if response.content else None


def _error(response: Any) -> SlmctlError:
    try:
        message = response.json().get("error") or response.text
    except ValueError:
        message = response.text
    status = response.status_code
    if status == 404:
        return ModelNotFound(message)
    if status == 503:
        return ServerBusy(message, retry_after=int(response.headers.get("Retry-After", "1") or 1))
    if 400 <= status < 500:
        return UsageError(message)
    return OperationFailed(f"the server failed: {message}")
