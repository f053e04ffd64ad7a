"""The server's view of the key file: who a presented key belongs to, and whether it may still be used.

:class:`KeyRing` reloads the file whenever it is replaced (``slmctl keys create|revoke`` while the server
runs takes effect on the next request), refusing it, and so every key, when its permissions become
unsafe. A key whose scrypt digest matched once is remembered for the life of the process under an HMAC
of it with a per-process random key (never the key itself), so a client pays the slow hash once, not
per request (it is tied to the digest it matched, so it stays true across reloads). Revocation and
expiry are read from the current file on every request. Last use is
recorded in memory and written to the file at most once a minute, and when the server stops.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from slmctl.errors import SlmctlError
from slmctl.security.keys import ApiKey, KeyStore, token_id, utc_now

log = logging.getLogger("slmctl.server")


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking a key: ``ok``, or why not (``missing``, ``malformed``, ``unknown``,
    ``revoked``, ``expired``, ``keyfile``); ``key`` is known whenever the key itself matched."""

    reason: str
    key: ApiKey | None = None

    @property
    def ok(self) -> bool:
        return self.reason == "ok"


class KeyRing:
    def __init__(self, store: KeyStore, *, flush_every: float = 60.0) -> None:
        self.store = store
        self.flush_every = flush_every
        self._pepper = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._by_id: dict[str, ApiKey] = {}
        self._known: dict[bytes, bytes] = {}  # HMAC(pepper, key) -> the digest it matched
        self._signature: object = ()
        self._broken: str | None = None
        self._used: dict[str, datetime] = {}
        self._flushed = time.monotonic()

    # -- the file -------------------------------------------------------------------------------------
    def refresh(self, *, strict: bool = False) -> None:
        """Reload the file if it changed. ``strict`` (at start-up): raise when it cannot be used;
        otherwise log it and refuse every key until it is fixed."""
        signature = self.store.signature()
        if signature == self._signature and self._broken is None:
            return
        try:
            keys = self.store.load()
        except SlmctlError as error:
            if strict:
                raise
            with self._lock:
                if self._broken is None:
                    log.error("refusing every API key: %s (%s)", error.message, error.hint or "")
                self._broken, self._known, self._signature = error.message, {}, signature
            return
        with self._lock:
            self._by_id = {k.key_id: k for k in keys}
            digests = {k.digest for k in keys}
            self._known = {mac: digest for mac, digest in self._known.items() if digest in digests}
            self._signature, self._broken = signature, None

    def keys(self) -> list[ApiKey]:
        return list(self._by_id.values())

    def active(self) -> list[ApiKey]:
        now = utc_now()
        return [k for k in self._by_id.values() if k.status(now) == "active"]

    # -- checking -------------------------------------------------------------------------------------
    def _mac(self, token: str) -> bytes:
        return hmac.new(self._pepper, token.encode("utf-8"), hashlib.sha256).digest()

    def quick(self, token: str) -> Verdict | None:
        """The verdict when it needs no hashing (a known key, a malformed or unknown one); None when
        the slow check (:meth:`check`, off the event loop) must decide."""
        self.refresh()
        if self._broken is not None:
            return Verdict("keyfile")
        key_id = token_id(token)
        if key_id is None:
            return Verdict("malformed")
        entry = self._by_id.get(key_id)
        if entry is None:
            return Verdict("unknown")
        known = self._known.get(self._mac(token))
        if known is not None and hmac.compare_digest(known, entry.digest):
            return self._status(entry)
        return None

    def check(self, token: str) -> Verdict:
        """The full check (scrypt: tens of milliseconds of CPU; call it from a worker thread)."""
        quick = self.quick(token)
        if quick is not None:
            return quick
        entry = self._by_id.get(token_id(token) or "")
        if entry is None or not entry.matches(token):
            return Verdict("unknown")
        with self._lock:
            self._known[self._mac(token)] = entry.digest
        return self._status(entry)

    def _status(self, entry: ApiKey) -> Verdict:
        status = entry.status()
        if status != "active":
            return Verdict(status, entry)
        with self._lock:
            self._used[entry.name] = utc_now()
        return Verdict("ok", entry)

    # -- last use ---------------------------------------------------------------------------------------
    def flush_due(self) -> bool:
        return bool(self._used) and time.monotonic() - self._flushed >= self.flush_every

    def flush(self) -> None:
        """Write the recorded last-use times to the key file (blocking: file lock, atomic write)."""
        with self._lock:
            used, self._used, self._flushed = self._used, {}, time.monotonic()
        if not used:
            return
        try:
            self.store.record_use(used)
        except (SlmctlError, OSError) as error:
            log.warning("could not record the keys' last use: %s", error)
