"""Lock files for one job each (a pull of one model, a download of one file) that do not pile up in ``tmp/``.

:func:`job_lock` holds a :class:`filelock.FileLock` and deletes its file *while still holding it*, just
before releasing: a process that was waiting on the deleted file gets the lock on an unlinked inode,
which filelock detects (link count 0) and retries on a fresh file, so two holders never coexist.
Deleting it after the release instead would open that race. :func:`sweep_stale_locks` removes the lock
files that killed processes left (a lock nobody holds: taken without waiting, deleted, released).

The store's own ``.lock`` is long-lived and never deleted. Windows deletes lock files on release itself
(filelock); deleting an open file can fail there, which is harmless.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

__all__ = ["job_lock", "sweep_stale_locks"]


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
