"""sha256 of a file that parallel download parts are still filling, computed while the bytes arrive.

A sha256 is sequential, but the parts of a download finish out of order. :class:`FollowingHasher` is a
thread that hashes the file from byte 0 up to the *contiguous downloaded prefix* (every finished part,
then what the first unfinished part holds), reading back the bytes the workers have just written (they
are still in the page cache), and waits for more when it catches up. Hashing thus overlaps the
transfer instead of being a second pass over the finished file, and ``hashlib`` releases the GIL
while it works, so it runs on another core. After a resume the hasher simply starts with the bytes
already on disk.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path

from slmctl.fileio import DIGEST_PREFIX

READ_CHUNK = 4 << 20
POLL_S = 0.005


class FollowingHasher(threading.Thread):
    """Hash ``path[0:size]`` in order, never past ``frontier()``; :meth:`result` waits for the digest.

    ``frontier()`` returns how many leading bytes of the file are downloaded (it must only grow);
    ``cancelled`` stops the thread early (then :meth:`result` raises).
    """

    def __init__(self, path: Path, size: int, frontier: Callable[[], int], cancelled: threading.Event) -> None:
        super().__init__(name="slmctl-hash", daemon=True)
        self.path = path
        self.size = size
        self.frontier = frontier
        self.cancelled = cancelled
        self.position = 0
        self._hasher = hashlib.sha256()
        self._error: BaseException | None = None

    def run(self) -> None:
        buffer = bytearray(READ_CHUNK)
        view = memoryview(buffer)
        try:
            with open(self.path, "rb", buffering=0) as fh:
                while self.position < self.size and not self.cancelled.is_set():
                    limit = min(self.frontier(), self.size)
                    if limit <= self.position:
                        self.cancelled.wait(POLL_S)
                        continue
                    fh.seek(self.position)
                    while self.position < limit:
                        n = fh.readinto(view[: min(READ_CHUNK, limit - self.position)])
                        if not n:
                            raise OSError(f"'{self.path}' ended at byte {self.position}, expected {limit}")
                        self._hasher.update(view[:n])
                        self.position += n
        except BaseException as exc:  # reported by result()
            self._error = exc

    def result(self) -> str:
        """``sha256:<hex>`` of the whole file, once every byte is hashed; re-raises the thread's error."""
        self.join()
        if self._error is not None:
            raise self._error
        if self.position < self.size:
            raise RuntimeError(f"hashing stopped at byte {self.position} of {self.size}")
        return DIGEST_PREFIX + self._hasher.hexdigest()
