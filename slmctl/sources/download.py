"""Transport-independent, resumable, verified file downloads over HTTP(S).

:func:`download` fetches one :class:`DownloadTarget` to ``dest``:

* A probe ``GET`` with ``Range: bytes=0-0`` tells whether the server honours ranges (``206``) and the
  total size (``Content-Range``). With ranges and a known size the file is split into up to ``parts``
  parts of at least ``min_part_size`` bytes, fetched by threads into ``<dest>.partial`` (preallocated)
  while ``<dest>.partial.json`` records per-part progress. The sidecar is written by the main thread
  every ``checkpoint_interval`` seconds, always *after* an fsync of the data it describes, so after a
  crash, Ctrl-C or SIGKILL the next run re-downloads at most the unrecorded tail of each part. A
  sidecar that does not match url/size/sha256 (or a partial of the wrong size) means starting over.
* Without range support (or size) the body is streamed once; a retry restarts from byte 0.
* Hashing: a single stream is hashed as bytes arrive; parallel parts are hashed in one sequential
  pass over the finished file (no streaming trick: parts finish out of order). A digest or size
  mismatch deletes the partial data and raises :class:`IntegrityError`.
* Retries (see :mod:`slmctl.sources.http`): 5xx, 408, 429 (``Retry-After``), connection errors,
  bodies cut short and stalls (no byte for ``stall_timeout`` s) with exponential backoff + jitter.
* Free disk space is checked first (``OperationFailed``); a ``filelock`` on ``<dest>.lock`` makes a
  second download of the same dest wait and then reuse the finished, verified file.
* Success: fsync, rename ``.partial`` to ``dest``, drop the sidecar. KeyboardInterrupt keeps both
  (parallel mode) for the next run and re-raises. ``on_progress(completed, total)`` may be called
  from worker threads, but never concurrently.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from filelock import FileLock

from slmctl.errors import IntegrityError, OperationFailed
from slmctl.sources.http import (
    Cancelled,
    DownloadError,
    Progress,
    RetryPolicy,
    Transient,
    check_response,
    default_client,
    display_url,
    probe,
    with_retries,
)
from slmctl.store.blobs import DIGEST_PREFIX, sha256_file, unlink_quietly
from slmctl.store.fsutil import fsync_dir, write_atomic
from slmctl.units import human_size

MiB = 1 << 20
SIDECAR_VERSION = 1


@dataclass(frozen=True)
class DownloadTarget:
    """What to fetch: ``size`` and ``sha256`` (``sha256:<hex>``) are verified when given."""

    url: str
    size: int | None = None
    sha256: str | None = None


@dataclass
class _Part:
    start: int
    end: int  # exclusive
    done: int = 0

    @property
    def finished(self) -> bool:
        return self.start + self.done >= self.end


def download(
    client_factory: Callable[[], httpx.Client] | None,
    target: DownloadTarget,
    dest: Path,
    *,
    parts: int = 4,
    min_part_size: int = 8 * MiB,
    retries: int = 5,
    stall_timeout: float = 30.0,
    headers: Mapping[str, str] | None = None,
    on_progress: Callable[[int, int | None], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    disk_usage: Callable[[Path], Any] = shutil.disk_usage,
    checkpoint_interval: float = 1.0,
) -> str:
    """Download ``target`` to ``dest`` (see the module docstring); returns its ``sha256:<hex>``.

    ``client_factory`` (``None``: :func:`default_client`) makes the client, which is closed at the
    end. Raises ``DownloadError`` (a ``NetworkError`` with ``.status``), ``IntegrityError`` or
    ``OperationFailed``.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    policy = RetryPolicy(retries=retries, sleep=sleep)
    with FileLock(str(dest) + ".lock"):
        existing = _reuse_existing(dest, target)
        if existing is not None:
            return existing
        with (client_factory or default_client)() as client:
            job = _Job(client, target, dest, policy, stall_timeout, dict(headers or {}), on_progress,
                       disk_usage, checkpoint_interval, max(1, parts), max(1, min_part_size))
            return job.run()


def _reuse_existing(dest: Path, target: DownloadTarget) -> str | None:
    """The digest of an already downloaded, matching ``dest``; a non-matching one is removed."""
    if not dest.is_file():
        return None
    digest, size = sha256_file(dest)
    if (target.sha256 is None or digest == target.sha256) and (target.size is None or size == target.size):
        return digest
    unlink_quietly(dest)
    return None


@dataclass
class _Job:
    client: httpx.Client
    target: DownloadTarget
    dest: Path
    policy: RetryPolicy
    stall_timeout: float
    headers: dict[str, str]
    on_progress: Callable[[int, int | None], None] | None
    disk_usage: Callable[[Path], Any]
    checkpoint_interval: float
    parts: int
    min_part_size: int

    def __post_init__(self) -> None:
        self.timeout = httpx.Timeout(self.stall_timeout)
        self.headers = {**self.headers, "Accept-Encoding": "identity"}
        self.partial = self.dest.with_suffix(self.dest.suffix + ".partial")
        self.sidecar = self.dest.with_suffix(self.dest.suffix + ".partial.json")
        self.layout: list[_Part] = []
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ common
    def _retry(self, attempt: Callable[[], Any], progress: Callable[[], int] | None = None) -> Any:
        return with_retries(
            self.policy, attempt, url=self.target.url, stall_timeout=self.stall_timeout, progress=progress
        )

    def _get(self, extra: Mapping[str, str] | None = None) -> httpx.Response:
        request = self.client.build_request(
            "GET", self.target.url, headers={**self.headers, **(extra or {})}, timeout=self.timeout
        )
        return self.client.send(request, stream=True)

    def _check_space(self, needed: int) -> None:
        free = int(self.disk_usage(self.dest.parent).free)
        if free < needed:
            raise OperationFailed(
                f"not enough free disk space in '{self.dest.parent}': the download needs "
                f"{human_size(needed)} ({needed} bytes) but only {human_size(free)} ({free} bytes) are free",
                hint="free some disk space or move the model store to a larger disk",
            )

    def _discard(self) -> None:
        unlink_quietly(self.partial)
        unlink_quietly(self.sidecar)

    def _verify(self, digest: str, size: int) -> None:
        expected_size, expected = self.target.size, self.target.sha256
        shown = display_url(self.target.url)
        if expected_size is not None and size != expected_size:
            self._discard()
            raise IntegrityError(
                f"size mismatch for {shown}: expected {expected_size} bytes, got {size}",
                hint="run the command again; if it persists the source file has changed",
            )
        if expected is not None and digest != expected:
            self._discard()
            raise IntegrityError(
                f"digest mismatch for {shown}: expected {expected}, got {digest}",
                hint="run the command again; if it persists the source file has changed",
            )

    def _publish(self) -> None:
        os.replace(self.partial, self.dest)
        unlink_quietly(self.sidecar)
        fsync_dir(self.dest.parent)

    # ------------------------------------------------------------------ probe
    def run(self) -> str:
        ranges, total, first = self._retry(lambda: probe(self._get, self.target.url))
        expected = self.target.size
        if expected is not None and total is not None and total != expected:
            if first is not None:
                first.close()
            raise IntegrityError(
                f"size mismatch for {display_url(self.target.url)}: expected {expected} bytes, "
                f"the server has {total}",
                hint="the source file has changed; refresh the model metadata and try again",
            )
        size = expected if expected is not None else total
        if ranges and size is not None and size > 0:
            return self._run_parts(size)
        return self._run_single(first, size)

    # ------------------------------------------------------------------ single stream
    def _run_single(self, first: httpx.Response | None, size: int | None) -> str:
        unlink_quietly(self.sidecar)
        try:
            self._check_space(size or 0)
        except BaseException:
            if first is not None:
                first.close()
            raise
        progress = Progress(size, callback=self.on_progress)
        unused = [first] if first is not None else []  # the probe's 200 response is the first attempt
        hasher = hashlib.sha256()

        def attempt() -> int:
            nonlocal hasher
            response = unused.pop() if unused else self._get()
            hasher, progress.completed, written = hashlib.sha256(), 0, 0
            with closing(response), open(self.partial, "wb") as fh:
                check_response(response, self.target.url)
                for chunk in response.iter_raw():
                    fh.write(chunk)
                    hasher.update(chunk)
                    written += len(chunk)
                    progress.advance(len(chunk))
                fh.flush()
                os.fsync(fh.fileno())
            if size is not None and written < size:
                raise Transient(f"connection closed after {written} of {size} bytes")
            return written

        try:
            written = self._retry(attempt)
        except BaseException:
            for response in unused:
                response.close()
            unlink_quietly(self.partial)  # cannot resume without ranges
            raise
        digest = DIGEST_PREFIX + hasher.hexdigest()
        self._verify(digest, written)
        self._publish()
        return digest

    # ------------------------------------------------------------------ parallel parts
    def _run_parts(self, size: int) -> str:
        layout = self._load_sidecar(size)
        remaining = size - sum(p.done for p in layout) if layout else size
        self._check_space(remaining)
        if layout is None:
            self._discard()
            count = max(1, min(self.parts, -(-size // self.min_part_size)))
            bounds = [size * i // count for i in range(count + 1)]
            layout = [_Part(bounds[i], bounds[i + 1]) for i in range(count)]
            with open(self.partial, "wb") as fh:
                fh.truncate(size)
        self.layout = layout
        progress = Progress(size, size - remaining, self.on_progress)
        errors: list[BaseException] = []
        threads = [
            threading.Thread(target=self._part_worker, args=(part, progress, errors), daemon=True)
            for part in layout
            if not part.finished
        ]
        with open(self.partial, "r+b") as anchor:
            self._checkpoint(anchor)
            try:
                for thread in threads:
                    thread.start()
                while any(t.is_alive() for t in threads):
                    next(t for t in threads if t.is_alive()).join(self.checkpoint_interval)
                    self._checkpoint(anchor)
            except BaseException:
                self.policy.cancel.set()
                for thread in threads:
                    thread.join(timeout=1.0)
                self._checkpoint(anchor)
                raise
            self._checkpoint(anchor)
        if errors:  # the first real failure, not the Cancelled of the parts it stopped
            raise next((e for e in errors if not isinstance(e, Cancelled)), errors[0])
        digest, written = sha256_file(self.partial)
        self._verify(digest, written)
        self._publish()
        return digest

    def _part_worker(self, part: _Part, progress: Progress, errors: list[BaseException]) -> None:
        def attempt() -> None:
            start = part.start + part.done
            response = self._get({"Range": f"bytes={start}-{part.end - 1}"})
            with closing(response), open(self.partial, "r+b", buffering=0) as fh:
                check_response(response, self.target.url)
                if response.status_code != 206:
                    raise DownloadError(
                        f"{display_url(self.target.url)} ignored a range request (HTTP {response.status_code})",
                        url=self.target.url,
                        status=response.status_code,
                    )
                fh.seek(start)
                for chunk in response.iter_raw():
                    if self.policy.cancel.is_set():
                        raise Cancelled()
                    data = memoryview(chunk)[: part.end - part.start - part.done]
                    while data:
                        n = fh.write(data) or 0
                        data = data[n:]
                        with self._lock:
                            part.done += n
                        progress.advance(n)
                    if part.finished:
                        return
            if not part.finished:
                raise Transient(f"connection closed with {part.end - part.start - part.done} bytes of a part left")

        try:
            self._retry(attempt, progress=lambda: part.done)
        except BaseException as exc:  # reported to the main thread
            errors.append(exc)
            self.policy.cancel.set()

    def _checkpoint(self, anchor: Any) -> None:
        """fsync the data, then record what it holds (never more than what is on disk)."""
        with self._lock:
            snapshot = [{"start": p.start, "end": p.end, "done": p.done} for p in self.layout]
        os.fsync(anchor.fileno())
        state = {
            "version": SIDECAR_VERSION,
            "url": self.target.url,
            "size": self.target.size,
            "sha256": self.target.sha256,
            "parts": snapshot,
        }
        write_atomic(self.sidecar, json.dumps(state))

    def _load_sidecar(self, size: int) -> list[_Part] | None:
        """The recorded layout when the sidecar and the partial file match this target, else None."""
        try:
            state = json.loads(self.sidecar.read_text(encoding="utf-8"))
            if self.partial.stat().st_size != size:
                return None
        except (OSError, ValueError):
            return None
        t = self.target
        if not isinstance(state, dict) or (state.get("version"), state.get("url"), state.get("size"),
                                           state.get("sha256")) != (SIDECAR_VERSION, t.url, t.size, t.sha256):
            return None
        try:
            layout = [_Part(int(p["start"]), int(p["end"]), int(p["done"])) for p in state["parts"]]
        except (KeyError, TypeError, ValueError):
            return None
        position = 0
        for part in layout:
            if part.start != position or part.end <= part.start or not 0 <= part.done <= part.end - part.start:
                return None
            position = part.end
        return layout if position == size and layout else None
