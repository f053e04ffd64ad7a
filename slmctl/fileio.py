"""File primitives the store and the downloader share: digests, atomic writes, quiet deletes, job locks.

Owns the ``sha256:<hex>`` digest of bytes and of a file (:func:`sha256_bytes`, :func:`sha256_file`),
atomic file replacement (:func:`write_atomic`: ``*.tmp`` + fsync + ``os.replace``), best-effort
directory fsync (:func:`fsync_dir`) and deletion (:func:`unlink_quietly`), and the lock files of one job
each (a pull of one model, a download of one file) that do not pile up in a folder.

:func:`job_lock` holds a :class:`filelock.FileLock` and deletes its file *while still holding it*, just
before releasing: a process that was waiting on the deleted file gets the lock on an unlinked inode,
which filelock detects (link count 0) and retries on a fresh file, so two holders never coexist.
Deleting it after the release instead would open that race. :func:`sweep_stale_locks` removes the lock
files that killed processes left (a lock nobody holds: taken without waiting, deleted, released). The
store's own ``.lock`` is long-lived and never deleted. Windows deletes lock files on release itself
(filelock); deleting an open file can fail there, which is harmless.

A leaf: it imports only :mod:`slmctl.errors`, the standard library and filelock; no store layout
knowledge lives here.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from slmctl.errors import OperationFailed

__all__ = ["CHUNK_SIZE", "DIGEST_PREFIX", "fsync_dir", "job_lock", "sha256_bytes", "sha256_file",
           "sweep_stale_locks", "unlink_quietly", "write_atomic"]

CHUNK_SIZE = 1 << 20
DIGEST_PREFIX = "sha256:"


# -- digests --------------------------------------------------------------------------------------------


def sha256_bytes(data: bytes) -> str:
    """The ``sha256:<hex>`` digest of ``data``."""
    return DIGEST_PREFIX + hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk: int = CHUNK_SIZE) -> tuple[str, int]:
    """Hash a file in chunks; returns ``(digest, size)``. Unreadable files raise ``OperationFailed``."""
    hasher = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as fh:
            while block := fh.read(chunk):
                hasher.update(block)
                size += len(block)
    except OSError as exc:
        raise OperationFailed(f"cannot read '{path}': {exc.strerror or exc}") from exc
    return DIGEST_PREFIX + hasher.hexdigest(), size


# -- writing and deleting -------------------------------------------------------------------------------


def fsync_dir(directory: Path) -> None:
    """Flush a directory entry change to disk (best effort; a no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see either the old file or the complete new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def unlink_quietly(path: Path) -> None:
    """Delete a file if it exists, ignoring errors (best-effort cleanup)."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


# -- job locks ------------------------------------------------------------------------------------------


@contextmanager
def job_lock(path: Path, *, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the lock file ``path`` (waiting for another holder; ``on_wait()`` is called first if it must
    wait) and delete it on the way out, whatever happens inside."""
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if on_wait is not None:
            on_wait()
        lock.acquire()
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
        lock.release()


def sweep_stale_locks(directory: Path, pattern: str) -> int:
    """Delete the lock files matching ``pattern`` in ``directory`` that nobody holds; returns how many."""
    removed = 0
    if not directory.is_dir():
        return removed
    for path in sorted(directory.glob(pattern)):
        lock = FileLock(str(path))
        try:
            lock.acquire(timeout=0)
        except (Timeout, OSError):
            continue
        try:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
                removed += 1
        finally:
            lock.release()
    return removed
