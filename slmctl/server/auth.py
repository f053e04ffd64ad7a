"""API keys and the audit log at the HTTP edge: :class:`Gate`, the ASGI middleware, and :func:`install`.

For each request the gate takes the key from ``Authorization: Bearer`` or ``x-api-key``, checks it
(:class:`~slmctl.security.keyring.KeyRing`; the slow hash runs off the event loop, two at a time) and
the role the route and the body need (:mod:`slmctl.server.access`): 401 without a valid key, 403 for a
``user`` key where an admin one is needed, each in the API's own error shape, each an audit line. It
leaves the caller's key *name* and role on the request (``request.state.key_name`` / ``key_role``, both
None when auth is off or the route is public; ``scope["state"]["auth_failure"]`` holds the reason of a
refusal) for the layers inside it, such as a per-key rate limit. Model operations are audited with
their outcome before the client can have the whole answer; server start and stop come from the ASGI
lifespan messages passing through. :mod:`slmctl.server.security` sets it up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from slmctl.security.audit import AuditLog
from slmctl.security.keyring import KeyRing, Verdict
from slmctl.security.keys import Role
from slmctl.server.access import OPERATION_PATHS, PROMPT_PATHS, Need, Operation, Policy, answer_text, operation
from slmctl.server.errors import error_response

log = logging.getLogger("slmctl.server")
_CAPTURE = 8 * 1024 * 1024  # the most of an answer kept for --log-prompts
_TAIL = 64 * 1024  # the end of a progress stream kept to read its outcome
_MESSAGES = {"missing": "no API key: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'",
             "malformed": "invalid API key", "unknown": "invalid API key",
             "revoked": "this API key has been revoked", "expired": "this API key has expired",
             "keyfile": "the server cannot use its API key file; its operator must fix it"}
#: Refusal reasons -> the ``reason`` label of the metrics' auth-failure counter.
_METRIC_REASONS = {"missing": "missing_key", "malformed": "invalid_key", "unknown": "invalid_key",
                   "revoked": "invalid_key", "expired": "expired_key"}


def token_from(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The key of ``Authorization: Bearer KEY``, else of ``x-api-key: KEY``."""
    found: dict[bytes, str] = {}
    for name, value in headers:
        found.setdefault(name.lower(), value.decode("latin-1").strip())
    scheme, _, credential = found.get(b"authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credential.strip():
        return credential.strip()
    return found.get(b"x-api-key") or None


async def read_body(receive: Any, limit: int) -> tuple[bytes | None, Any]:
    """The whole request body (None when over ``limit``) and a ``receive`` that hands it out again."""
    seen: list[dict[str, Any]] = []
    body = bytearray()
    while True:
        message = await receive()
        seen.append(message)
        if message["type"] != "http.request":
            return None, _replay(seen, receive)
        body += message.get("body", b"")
        if len(body) > limit:
            return None, _replay(seen, receive)  # the body limit inside answers 413
        if not message.get("more_body"):
            return bytes(body), _replay([{"type": "http.request", "body": bytes(body), "more_body": False}], receive)


def _replay(messages: list[dict[str, Any]], then: Any) -> Any:
    pending = list(messages)

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else await then()

    return receive


class _Recorder:
    """An ASGI ``send`` that notes the status and the body (all of it, or its end) and calls ``done``
    before the client can have the whole answer: the status line goes out with the first part of the
    body, the last part after ``done``."""

    def __init__(self, send: Any, keep_all: bool, done: Callable[[_Recorder], Awaitable[None]]) -> None:
        self.send, self.keep_all, self.done = send, keep_all, done
        self.status, self.content_type, self.body, self.finished = 0, "", bytearray(), False
        self.start: dict[str, Any] | None = None

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.content_type = dict(message.get("headers") or []).get(b"content-type", b"").decode("latin-1")
            self.start = message  # held back: with "Content-Length: 0" the headers alone complete the answer
            return
        if message["type"] == "http.response.body":
            self.body += message.get("body", b"")
            if not self.keep_all and len(self.body) > _TAIL:
                del self.body[:-_TAIL]
            elif len(self.body) > _CAPTURE:
                del self.body[_CAPTURE:]
            if not message.get("more_body", False) and not self.finished:
                self.finished = True
                await self.done(self)
        if self.start is not None:
            start, self.start = self.start, None
            await self.send(start)
        await self.send(message)

    def outcome(self) -> tuple[str, str | None]:
        """``ok``, or ``error`` and its message (an error status, or a last ``error`` line in a stream)."""
        text = bytes(self.body).decode("utf-8", errors="replace")
        lines = [line.removeprefix("data:").strip() for line in text.splitlines() if line.strip()] or [text]
        for candidate in ([text] if self.status >= 400 else lines[-1:]):
            try:
                error = json.loads(candidate).get("error")
            except (ValueError, AttributeError):
                error = None
            if error:
                return "error", error.get("message") if isinstance(error, dict) else str(error)
        return ("error", None) if self.status >= 400 else ("ok", None)


class Gate:
    def __init__(self, app: Any, *, policy: Policy, ring: KeyRing | None, audit: AuditLog, log_prompts: bool,
                 max_body: int, started: dict[str, Any]) -> None:
        self.app, self.policy, self.ring, self.audit = app, policy, ring, audit
        self.log_prompts, self.max_body, self.started = log_prompts, max_body, started
        self._slow = asyncio.Semaphore(2)  # scrypt checks at once (CPU and 16 MiB each)
        self._background: set[asyncio.Future[Any]] = set()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._lifespan(send))
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        state = scope.setdefault("state", {})
        state["key_name"] = state["key_role"] = None
        who = {"client": (scope.get("client") or ("", 0))[0] or None, "route": path, "method": method}
        need = self.policy.need(method, path)
        role = None
        if self.ring is not None and need > Need.PUBLIC:
            verdict = await self._verdict(token_from(scope.get("headers") or []))
            if not verdict.ok:
                await self._refuse(scope, receive, send, verdict, who)
                return
            assert verdict.key is not None
            state["key_name"], state["key_role"] = verdict.key.name, verdict.key.role.value
            who.update(key=verdict.key.name, role=verdict.key.role.value)
            role = verdict.key.role
        op = Operation()
        if method in ("POST", "DELETE") and (path in OPERATION_PATHS or (self.log_prompts and path in PROMPT_PATHS)):
            raw, receive = await read_body(receive, self.max_body)
            op = operation(method, path, _json(raw))
        elif path.startswith("/api/blobs/"):
            op = operation(method, path, None)
        if role is Role.USER and (need is Need.ADMIN or op.admin):
            what = op.what or f"{method} {path}"
            state["auth_failure"] = "role"
            _count(scope, "forbidden")
            await self._write("forbidden", {**who, "model": op.model, "outcome": "denied", "status": 403})
            message = f"the key '{who['key']}' has the role 'user': {what} needs an admin key"
            await error_response(403, message, path=path, code="insufficient_permissions")(scope, receive, send)
            return
        if op.event is None or (op.event == "generate" and not self.log_prompts):
            await self.app(scope, receive, send)
            return
        fields = {**who, "model": op.model, **{k: v for k, v in op.extra.items() if v is not None}}
        if self.log_prompts and op.prompt is not None:
            fields["prompt"] = op.prompt
        recorder = _Recorder(send, self.log_prompts and op.event in ("generate", "unload"),
                             lambda rec: self._write_kept(op.event or "", self._result(fields, rec)))
        try:
            await self.app(scope, receive, recorder)
        finally:
            if not recorder.finished:  # failed or cancelled before its end: record it all the same
                self._later(op.event, {**fields, "outcome": "incomplete", "status": recorder.status or None})

    # -- keys -----------------------------------------------------------------------------------------
    async def _verdict(self, token: str | None) -> Verdict:
        assert self.ring is not None
        if token is None:
            return Verdict("missing")
        verdict = self.ring.quick(token)
        if verdict is None:
            async with self._slow:
                verdict = await asyncio.to_thread(self.ring.check, token)
        if self.ring.flush_due():
            self._later(None, {})
        return verdict

    async def _refuse(self, scope: dict[str, Any], receive: Any, send: Any, verdict: Verdict,
                      who: dict[str, Any]) -> None:
        scope["state"]["auth_failure"] = verdict.reason
        _count(scope, _METRIC_REASONS.get(verdict.reason, "other"))
        status = 503 if verdict.reason == "keyfile" else 401
        if verdict.key is not None:
            who.update(key=verdict.key.name, role=verdict.key.role.value)
        await self._write("auth_failed", {**who, "outcome": "denied", "status": status, "reason": verdict.reason})
        headers = {"WWW-Authenticate": 'Bearer realm="slmctl"'} if status == 401 else {"Retry-After": "60"}
        response = error_response(status, _MESSAGES[verdict.reason], headers, path=scope["path"],
                                  code="invalid_api_key" if status == 401 else "server_misconfigured")
        await response(scope, receive, send)

    # -- the audit log --------------------------------------------------------------------------------
    def _result(self, fields: dict[str, Any], recorder: _Recorder) -> dict[str, Any]:
        outcome, error = recorder.outcome()
        out = {**fields, "outcome": outcome, "status": recorder.status}
        if error:
            out["error"] = error[:500]
        if recorder.keep_all and outcome == "ok":
            out["answer"] = answer_text(recorder.content_type, bytes(recorder.body))
        return out

    async def _write(self, event: str, fields: dict[str, Any]) -> None:
        try:
            await asyncio.to_thread(self.audit.write, event, **fields)
        except Exception as error:  # noqa: BLE001 - a full disk must not take the API down; say so loudly
            log.error("could not write the audit log: %s", error)

    async def _write_kept(self, event: str, fields: dict[str, Any]) -> None:
        """Write ``event`` before going on, and even when the request is cancelled meanwhile (the client
        closing its connection once it has the end of a stream): the line is written, and the server
        waits for it when it stops."""
        await asyncio.shield(self._later(event, fields))

    def _later(self, event: str | None, fields: dict[str, Any]) -> asyncio.Future[Any]:
        """Write ``event`` (or flush the keys' last use) on a worker thread, even from a cancelled task."""
        def work() -> None:
            if event is None:
                assert self.ring is not None
                self.ring.flush()
                return
            try:
                self.audit.write(event, **fields)
            except Exception as error:  # noqa: BLE001
                log.error("could not write the audit log: %s", error)

        future = asyncio.get_running_loop().run_in_executor(None, work)
        self._background.add(future)
        future.add_done_callback(self._background.discard)
        return future

    def _lifespan(self, send: Any) -> Any:
        async def wrapped(message: dict[str, Any]) -> None:
            if message["type"] == "lifespan.startup.complete":
                await self._write("server_start", {**self.started, "outcome": "ok"})
            elif message["type"] == "lifespan.shutdown.complete":
                if self._background:
                    await asyncio.wait(set(self._background), timeout=10)
                if self.ring is not None:
                    await asyncio.to_thread(self.ring.flush)
                await self._write("server_stop", {"outcome": "ok", "pid": os.getpid()})
            await send(message)

        return wrapped


def _count(scope: dict[str, Any], reason: str) -> None:
    """Count a refusal in the server's metrics (``slmctl_auth_failures``), when it keeps them."""
    from slmctl.server.metrics import record_auth_failure

    if scope.get("app") is not None:
        record_auth_failure(scope["app"], reason)


def _json(raw: bytes | None) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None  # the route answers 400
