"""A small client of a running ``slmctl serve`` (for ``ps`` and ``stop``): where it is, and its errors
mapped back onto the exception hierarchy (no server: :class:`~slmctl.errors.ServerNotRunning`, exit 5).
With auth on, it sends ``SLMCTL_API_KEY`` as a Bearer key; over https it trusts ``SSL_CERT_FILE`` when set."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from slmctl.errors import (
    AuthenticationFailed, ModelNotFound, OperationFailed, PermissionDenied, ServerBusy, ServerNotRunning, SlmctlError,
    UsageError,
)
from slmctl.settings import client_base_url


class ServerClient:
    def __init__(self, base_url: str, timeout: float = 30.0, *, api_key: str | None = None,
                 ca_file: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.api_key, self.ca_file = api_key, ca_file

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServerClient:
        env = os.environ if env is None else env
        return cls(client_base_url(env), api_key=env.get("SLMCTL_API_KEY", "").strip() or None,
                   ca_file=env.get("SSL_CERT_FILE", "").strip() or None)

    def get(self, path: str) -> Any:
        return self._request("GET", path)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._request("POST", path, body)

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        import httpx

        try:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else None
            verify: Any = True
            if self.ca_file and self.base_url.startswith("https://"):
                import ssl

                verify = ssl.create_default_context(cafile=self.ca_file)
            response = httpx.request(method, self.base_url + path, json=body, timeout=self.timeout, trust_env=False,
                                     headers=headers, verify=verify)
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
    if status == 401:
        return AuthenticationFailed(message, "set SLMCTL_API_KEY to a key the server knows ('slmctl keys create' "
                                    "where it runs)")
    if status == 403:
        return PermissionDenied(message, "set SLMCTL_API_KEY to an admin key")
    if status == 404:
        return ModelNotFound(message)
    if status == 503:
        return ServerBusy(message, retry_after=int(response.headers.get("Retry-After", "1") or 1))
    if 400 <= status < 500:
        return UsageError(message)
    return OperationFailed(f"the server failed: {message}")
