"""The audit log: one JSON line per security-relevant event, appended where the operator says.

Owns the line format - ``time`` (UTC, ISO 8601 with milliseconds), ``event``, then always ``key`` (the
key's *name*, never the key), ``role``, ``client``, ``route``, ``model``, ``outcome``, then the event's
own fields - and the writing: to a file (default ``$SLMCTL_HOME/audit.jsonl``; mode 0600) appended under
a :class:`filelock.FileLock` shared by the server and ``slmctl keys``, fsynced, and rotated by size
(``audit.jsonl`` -> ``audit.jsonl.1`` ... ``.5``, the oldest dropped) before a line would pass the limit;
or to standard output (``-``). Reading back (``GET /api/audit``) skips damaged lines.

Events: ``server_start``/``server_stop`` (with the settings), ``auth_failed`` (401), ``forbidden`` (403),
``pull``, ``create``, ``copy``, ``delete``, ``load``, ``unload``, ``blob`` (an upload), ``key_created``,
``key_revoked``, and ``generate`` (with the prompt and the answer) only under ``--log-prompts``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from slmctl.errors import OperationFailed

AUDIT_FILE = "audit.jsonl"
STDOUT = "-"
DEFAULT_MAX_BYTES = 10_000_000
KEEP = 5
LOCK_TIMEOUT = 30.0
#: Fields every line has (null when they do not apply), in this order after ``time`` and ``event``.
BASE_FIELDS = ("key", "role", "client", "route", "model", "outcome")


def default_path(home: Path) -> Path:
    return Path(home) / AUDIT_FILE


def audit_line(event: str, fields: Mapping[str, Any], now: datetime | None = None) -> str:
    when = (now or datetime.now(timezone.utc)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    record: dict[str, Any] = {"time": when, "event": event}
    record.update({name: fields.get(name) for name in BASE_FIELDS})
    record.update({k: v for k, v in fields.items() if k not in record})
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str) + "\n"


class AuditLog:
    """Where audit lines go: ``path`` (rotated past ``max_bytes``; 0: never) or standard output (None)."""

    def __init__(self, path: Path | None, max_bytes: int = DEFAULT_MAX_BYTES, keep: int = KEEP) -> None:
        self.path = Path(path) if path is not None else None
        self.max_bytes, self.keep = max_bytes, keep
        self._thread_lock = threading.Lock()

    @classmethod
    def at(cls, destination: str | None, home: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> AuditLog:
        """``-``: standard output; a path; None: ``$SLMCTL_HOME/audit.jsonl``."""
        if destination == STDOUT:
            return cls(None, max_bytes)
        return cls(Path(destination).expanduser() if destination else default_path(home), max_bytes)

    @property
    def destination(self) -> str:
        return str(self.path) if self.path is not None else "stdout"

    def check(self) -> None:
        """Fail now, not at the first event, when the file cannot be written (creating it, mode 0600)."""
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))
        except OSError as exc:
            raise OperationFailed(f"cannot write the audit log {self.path}: {exc.strerror or exc}",
                                  "give a writable file with --audit-log, or '-' for standard output") from None

    def write(self, event: str, **fields: Any) -> None:
        """Append one line (blocking: a file lock, a write and an fsync)."""
        line = audit_line(event, fields)
        if self.path is None:
            with self._thread_lock:
                sys.stdout.write(line)
                sys.stdout.flush()
            return
        from filelock import FileLock, Timeout

        data = line.encode("utf-8")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._thread_lock, FileLock(str(self.path) + ".lock", mode=0o600).acquire(timeout=LOCK_TIMEOUT):
                self._rotate_for(len(data))
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    if os.fstat(fd).st_size > 0 and not _ends_with_newline(self.path):
                        data = b"\n" + data  # a writer died mid-line: keep its torn line apart
                    os.write(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except Timeout:
            raise OperationFailed(f"the audit log {self.path} is locked by another process") from None
        except OSError as exc:
            raise OperationFailed(f"cannot write the audit log {self.path}: {exc.strerror or exc}") from None

    def _rotate_for(self, incoming: int) -> None:
        assert self.path is not None
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if not self.max_bytes or size == 0 or size + incoming <= self.max_bytes:
            return
        for index in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))

    def read(self, limit: int = 100, event: str | None = None) -> list[dict[str, Any]]:
        """The last ``limit`` readable lines of the current file (of one ``event`` if given), oldest first."""
        if self.path is None:
            return []
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        out: list[dict[str, Any]] = []
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and (event is None or record.get("event") == event):
                out.append(record)
        return out[-limit:] if limit > 0 else []


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as reader:
        reader.seek(-1, os.SEEK_END)
        return reader.read(1) == b"\n"
