"""API keys: their format, the hashed key file, and checking a presented key against one entry.

A key is ``slmctl_`` + an 8-character id + a 40-character secret + a 6-character CRC32 checksum, all
base62 (61 characters; about 238 random bits in the secret). The fixed prefix and the checksum let
secret scanners recognise one (``slmctl_[0-9A-Za-z]{54}``) and let the server drop a mistyped key
without any hashing. The id is not secret: it finds the one file entry to check.

The key file ``$SLMCTL_HOME/keys.json`` never holds a key: each entry keeps scrypt(key, a random
16-byte salt) with its parameters (n=2^14, r=8, p=1: about 16 MiB and some tens of milliseconds,
standard library, no extra dependency). A presented key matches when its scrypt digest equals the stored
one under :func:`hmac.compare_digest` (constant time). The file is written atomically (temp file +
``os.replace``) under a :class:`filelock.FileLock`, with mode 0600, and refused when group or others
may read it or another user owns it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import tempfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from enum import Enum
from pathlib import Path
from typing import Any

from slmctl.errors import InsecureFile, OperationFailed, UsageError
from slmctl.fileio import fsync_dir

KEYS_FILE = "keys.json"
PREFIX = "slmctl_"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ID_LEN, _SECRET_LEN, _CHECK_LEN = 8, 40, 6
TOKEN_PATTERN = re.compile(rf"^{PREFIX}([0-9A-Za-z]{{{_ID_LEN}}})([0-9A-Za-z]{{{_SECRET_LEN + _CHECK_LEN}}})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
#: scrypt cost parameters of new keys (each entry records its own).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
LOCK_TIMEOUT = 30.0


class Role(str, Enum):
    """What a key may do: ``user`` generates, chats, embeds and reads; ``admin`` also changes the store."""

    USER = "user"
    ADMIN = "admin"


@dataclass(frozen=True)
class ApiKey:
    """One entry of the key file (never the key itself)."""

    name: str
    role: Role
    key_id: str
    salt: bytes
    digest: bytes
    created_at: datetime
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    scrypt: tuple[int, int, int] = (SCRYPT_N, SCRYPT_R, SCRYPT_P)

    def status(self, now: datetime | None = None) -> str:
        """``active``, ``expired`` or ``revoked``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and (now or utc_now()) >= self.expires_at:
            return "expired"
        return "active"

    def matches(self, token: str) -> bool:
        """Whether ``token`` is this key: its scrypt digest, compared in constant time."""
        n, r, p = self.scrypt
        return hmac.compare_digest(_scrypt(token, self.salt, n, r, p), self.digest)

    def public(self) -> dict[str, Any]:
        """What ``keys list --json`` shows: no digest, no salt."""
        return {"name": self.name, "role": self.role.value, "id": self.key_id, "status": self.status(),
                "created_at": _iso(self.created_at), "expires_at": _iso(self.expires_at),
                "last_used_at": _iso(self.last_used_at), "revoked_at": _iso(self.revoked_at)}

    def to_json(self) -> dict[str, Any]:
        n, r, p = self.scrypt
        return {**{k: v for k, v in self.public().items() if k != "status"},
                "hash": f"scrypt:{n}:{r}:{p}:{_b64(self.salt)}:{_b64(self.digest)}"}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ApiKey:
        kind, n, r, p, salt, digest = str(data["hash"]).split(":")
        if kind != "scrypt":
            raise ValueError(f"unknown hash {kind!r}")
        return cls(name=str(data["name"]), role=Role(data["role"]), key_id=str(data["id"]),
                   salt=base64.b64decode(salt), digest=base64.b64decode(digest),
                   created_at=_parse_time(data["created_at"]) or utc_now(),
                   expires_at=_parse_time(data.get("expires_at")),
                   last_used_at=_parse_time(data.get("last_used_at")),
                   revoked_at=_parse_time(data.get("revoked_at")), scrypt=(int(n), int(r), int(p)))


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(when: datetime | None) -> str | None:
    return when.isoformat(timespec="seconds").replace("+00:00", "Z") if when is not None else None


def _parse_time(text: Any) -> datetime | None:
    return datetime.fromisoformat(str(text).replace("Z", "+00:00")) if text else None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(token: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(token.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * r * n + 1024 * 1024,
                          dklen=32)


def _base62(count: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(count))


def _checksum(text: str) -> str:
    value, out = zlib.crc32(text.encode("ascii")), []
    for _ in range(_CHECK_LEN):
        value, digit = divmod(value, 62)
        out.append(_ALPHABET[digit])
    return "".join(reversed(out))


def new_token(key_id: str | None = None) -> tuple[str, str]:
    """A fresh ``(id, key)``."""
    key_id = key_id or _base62(_ID_LEN)
    body = PREFIX + key_id + _base62(_SECRET_LEN)
    return key_id, body + _checksum(body)


def token_id(token: str) -> str | None:
    """The id of a well-formed key (prefix, length, alphabet, checksum), else None."""
    match = TOKEN_PATTERN.match(token)
    if match is None or not hmac.compare_digest(_checksum(token[:-_CHECK_LEN]), token[-_CHECK_LEN:]):
        return None
    return match.group(1)


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise UsageError(f"invalid key name {name!r}",
                         "use up to 64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit")
    return name


def check_private(path: Path) -> None:
    """Refuse a secrets file that group or others may read or write, or that another user owns."""
    if os.name == "nt":
        return
    info = path.stat()
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise InsecureFile(f"the key file {path} may be read by other users (mode {mode:04o})",
                           f"restrict it to its owner: chmod 600 {path}")
    if info.st_uid != os.getuid():
        raise InsecureFile(f"the key file {path} belongs to another user (uid {info.st_uid})",
                           "run slmctl as the user who owns it, or chown it")


class KeyStore:
    """The key file of one ``SLMCTL_HOME`` (or ``path``, ``SLMCTL_KEYS_FILE``): read, create, revoke, record
    last use. Its lock file lies beside it."""

    def __init__(self, home: Path, *, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else Path(home) / KEYS_FILE

    def load(self) -> list[ApiKey]:
        """Every entry (revoked and expired ones included); none when there is no file yet."""
        try:
            check_private(self.path)
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise OperationFailed(f"cannot read the key file {self.path}: {exc}") from None
        try:
            return [ApiKey.from_json(entry) for entry in data["keys"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise OperationFailed(f"the key file {self.path} is damaged: {exc}",
                                  "restore it from a backup, or move it away and create the keys again") from None

    def create(self, name: str, role: Role, expires_in: timedelta | None = None,
               now: datetime | None = None) -> tuple[ApiKey, str]:
        """A new key ``name`` (a revoked or expired one of that name is replaced); returns its entry and
        the key, which is shown once and stored nowhere."""
        check_name(name)
        now = now or utc_now()
        with self._locked():
            keys = self.load()
            if any(k.name == name and k.status(now) == "active" for k in keys):
                raise UsageError(f"a key named '{name}' already exists",
                                 f"revoke it first ('slmctl keys revoke {name}') or choose another name")
            ids = {k.key_id for k in keys}
            key_id, token = new_token()
            while key_id in ids:
                key_id, token = new_token()
            salt = secrets.token_bytes(16)
            entry = ApiKey(name=name, role=role, key_id=key_id, salt=salt,
                           digest=_scrypt(token, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P), created_at=now,
                           expires_at=now + expires_in if expires_in is not None else None)
            self._save([k for k in keys if k.name != name] + [entry])
        return entry, token

    def revoke(self, name: str, now: datetime | None = None) -> ApiKey:
        with self._locked():
            keys = self.load()
            found = [k for k in keys if k.name == name]
            if not found:
                raise UsageError(f"no key named '{name}'", "see the keys with 'slmctl keys list'")
            if found[0].revoked_at is not None:
                raise UsageError(f"the key '{name}' is already revoked")
            revoked = replace(found[0], revoked_at=now or utc_now())
            self._save([revoked if k.name == name else k for k in keys])
        return revoked

    def record_use(self, used: dict[str, datetime]) -> None:
        """Set ``last_used_at`` of the keys named in ``used`` (later times only)."""
        with self._locked():
            keys = self.load()
            updated = [replace(k, last_used_at=used[k.name])
                       if k.name in used and (k.last_used_at is None or used[k.name] > k.last_used_at) else k
                       for k in keys]
            if updated != keys:
                self._save(updated)

    def signature(self) -> tuple[int, ...] | None:
        """What changes when the file is replaced or its permissions change; None when there is none."""
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return None
        return info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_mode, info.st_uid

    def _locked(self) -> Any:
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.path) + ".lock", mode=0o600)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return lock.acquire(timeout=LOCK_TIMEOUT)
        except Timeout:
            raise OperationFailed(f"the key file {self.path} is locked by another process",
                                  "retry in a moment") from None

    def _save(self, keys: Iterable[ApiKey]) -> None:
        text = json.dumps({"version": 1, "keys": [k.to_json() for k in keys]}, indent=2) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)  # mkstemp made it 0600
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_dir(self.path.parent)


def summary(keys: Iterable[ApiKey]) -> dict[str, Any]:
    """Counts by role and status (for the server's start event: never names or digests)."""
    counts: dict[str, int] = {}
    for key in keys:
        label = f"{key.role.value}_{key.status()}"
        counts[label] = counts.get(label, 0) + 1
    return counts


__all__ = ["ApiKey", "KeyStore", "Role", "TOKEN_PATTERN", "check_private", "new_token", "token_id"]
