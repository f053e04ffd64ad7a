"""Setting up keys, roles and the audit log on the app: :func:`install` (called by ``create_app``), the
admin route ``GET /api/audit``, and the keys in the OpenAPI document.

:func:`install` decides whether auth is on (:meth:`~slmctl.security.config.SecurityConfig.auth_on`),
refuses to serve with auth on and no active key (or with an unsafe key file), warns when ``--no-auth``
exposes a network address, checks that the audit log can be written, and adds the
:class:`~slmctl.server.auth.Gate` middleware. With auth on, the OpenAPI document declares both ways to
send a key and the 401/403 answers each route may give.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import re
from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from slmctl import __version__
from slmctl.errors import UsageError
from slmctl.security.audit import AuditLog
from slmctl.security.config import is_loopback
from slmctl.security.keyring import KeyRing
from slmctl.security.keys import KeyStore, summary
from slmctl.server.access import OPERATION_PATHS, Need, Policy
from slmctl.server.auth import Gate
from slmctl.server.errors import error_response

log = logging.getLogger("slmctl.server")


class AuditEvents(BaseModel):
    events: list[dict[str, Any]]


router = APIRouter()


@router.get("/api/audit", response_model=AuditEvents)
async def read_audit(http: Request, limit: int = Query(100, ge=1, le=10000),
                     event: str | None = Query(None, max_length=64)) -> Any:
    """The last ``limit`` lines of the audit log (of one ``event`` if given), oldest first (admin keys)."""
    audit: AuditLog = http.app.state.audit
    if audit.path is None:
        return error_response(404, "the audit log goes to standard output (--audit-log -): the server keeps no copy",
                              path=http.url.path)
    return {"events": await asyncio.to_thread(audit.read, limit, event)}


def install(app: Any, config: Any, settings: Any) -> None:
    """Add the gate and ``/api/audit`` to ``app``; refuse to serve with auth on and no key."""
    security = config.security
    audit = AuditLog.at(security.audit_log, settings.home, security.audit_max_size)
    ring: KeyRing | None = None
    if security.auth_on(config.host):
        ring = KeyRing(KeyStore(settings.home, path=settings.keys_file))
        ring.refresh(strict=True)
        if not ring.active():
            where = "with --auth" if is_loopback(config.host) else f"on {config.host}"
            raise UsageError(f"refusing to serve {where} without API keys: no active key exists",
                             "create one ('slmctl keys create NAME --role admin'), or pass --no-auth to serve "
                             "without authentication")
    elif not is_loopback(config.host):
        log.warning("authentication is OFF (--no-auth) on %s:%d: anyone who can reach it may run, pull, create and "
                    "delete models", config.host, config.port)
    audit.check()
    app.state.audit, app.state.keyring = audit, ring
    app.include_router(router)
    policy = Policy(metrics_auth=config.metrics_auth)
    if ring is not None:
        document(app, policy)
    started = {"version": __version__, "pid": os.getpid(), "auth": ring is not None, "tls": security.tls,
               "keys": summary(ring.keys()) if ring is not None else None, "audit_log": audit.destination,
               "settings": json.loads(json.dumps(dataclasses.asdict(config), default=str))}
    app.add_middleware(Gate, policy=policy, ring=ring, audit=audit, log_prompts=security.log_prompts,
                       max_body=config.max_body, started=started)


def _error_schema(openai: bool) -> dict[str, Any]:
    inner: dict[str, Any] = ({"type": "object", "required": ["message", "type"],
                              "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                                             "param": {"type": ["string", "null"]},
                                             "code": {"type": ["string", "null"]}}}
                             if openai else {"type": "string"})
    return {"application/json": {"schema": {"type": "object", "required": ["error"], "properties": {"error": inner}}}}


def document(app: Any, policy: Policy) -> None:
    """Wrap ``app.openapi``: the two key schemes, and the 401 (and where a role can fall short, 403)
    answers of every route that needs a key."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes.update({"bearer": {"type": "http", "scheme": "bearer", "description": "slmctl keys create"},
                        "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}})
        for path, operations in schema.get("paths", {}).items():
            need = policy.need("GET", re.sub(r"\{[^}]+\}", "x", path))
            if need is Need.PUBLIC:
                continue
            content = _error_schema(path.startswith("/v1/"))
            for operation in operations.values():
                operation["security"] = [{"bearer": []}, {"apiKey": []}]
                responses = operation.setdefault("responses", {})
                responses.setdefault("401", {"description": "No API key, or an unknown, revoked or expired one",
                                             "content": content})
                if need is Need.ADMIN or path in OPERATION_PATHS:
                    responses.setdefault("403", {"description": "A user key where an admin key is needed",
                                                 "content": content})
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
