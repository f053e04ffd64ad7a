"""Transport-independent, resumable, verified file downloads over HTTP(S).

:func:`download` fetches one :class:`DownloadTarget` to ``dest``:

* A probe ``GET`` with ``Range: bytes=0-0`` tells whether the server honours ranges (``206``) and the
  total size (``Content-Range``). With ranges and a known size, :mod:`slmctl.sources.parallel` fetches
  the file as Range parts (:mod:`slmctl.sources.parts`: at least ``min_part_size`` bytes each, taken in
  file order by ``parts`` worker threads) into ``<dest>.partial`` (preallocated) while
  ``<dest>.partial.json`` records per-part progress, written every ``checkpoint_interval`` seconds
  *after* an fsync of the data it describes: after a crash, Ctrl-C or SIGKILL the next run re-downloads
  at most the unrecorded tail of each part. A sidecar that does not match url/size/sha256 (or a partial
  of the wrong size) means starting over.
* Without range support (or size) the body is streamed once; a retry restarts from byte 0.
* Hashing while bytes arrive: a single stream is hashed chunk by chunk; parallel parts are hashed in
  order by a :class:`~slmctl.sources.ordered_hash.FollowingHasher` thread that trails the contiguous
  downloaded prefix. A digest or size mismatch deletes the partial data and raises
  :class:`IntegrityError`.
* Durability without a pause at the end: the checkpoints (every ``checkpoint_interval`` s) fsync the
  data while the transfer goes on, so the final fsync before the rename only flushes the last moments.
* Retries (see :mod:`slmctl.sources.http`): 5xx, 408, 429 (``Retry-After``), connection errors,
  bodies cut short and stalls (no byte for ``stall_timeout`` s) with exponential backoff + jitter.
* Free disk space is checked first (``OperationFailed``); a lock on ``<dest>.lock`` makes a second
  download of the same dest wait and then reuse the finished, verified file. The lock file is deleted
  when the download ends, however it ends (:func:`slmctl.store.locks.job_lock`).
* Success: fsync, rename ``.partial`` to ``dest``, drop the sidecar. KeyboardInterrupt keeps both
  (parallel mode) for the next run and re-raises. ``on_progress(completed, total)`` may be called
  from worker threads, but never concurrently.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from slmctl.errors import IntegrityError, OperationFailed
from slmctl.sources import rawget
from slmctl.sources.http import (
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
from slmctl.store.fsutil import fsync_dir
from slmctl.store.locks import job_lock
from slmctl.units import human_size

MiB = 1 << 20


@dataclass(frozen=True)
class DownloadTarget:
    """What to fetch: ``size`` and ``sha256`` (``sha256:<hex>``) are verified when given; ``auth_hint``
    explains a refusal (401/403; default: the Hugging Face token hint)."""

    url: str
    size: int | None = None
    sha256: str | None = None
    auth_hint: str | None = None


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
    checkpoint_interval: float = 0.25,
    raw_bodies: bool | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Download ``target`` to ``dest`` (see the module docstring); returns its ``sha256:<hex>``.

    ``client_factory`` (``None``: :func:`default_client`) makes the client, which is closed at the
    end. ``raw_bodies`` (default: when no factory is injected) sends the parts through
    :mod:`slmctl.sources.rawget` when it supports the URL, with the proxies of ``env`` (default
    ``os.environ``). Raises ``DownloadError`` (a ``NetworkError`` with ``.status``), ``IntegrityError``
    or ``OperationFailed``.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    policy = RetryPolicy(retries=retries, sleep=sleep)
    with job_lock(Path(str(dest) + ".lock")):
        existing = _reuse_existing(dest, target)
        if existing is not None:
            return existing
        env = os.environ if env is None else env
        raw = (client_factory is None if raw_bodies is None else raw_bodies) and rawget.supported(target.url, env)
        with (client_factory or default_client)() as client:
            job = Job(client, target, dest, policy, stall_timeout, dict(headers or {}), on_progress,
                      disk_usage, checkpoint_interval, max(1, parts), max(1, min_part_size), raw, env)
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
class Job:
    """One download's settings and the steps both modes share (probe, checks, verification, publish)."""

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
    raw: bool = False
    env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.timeout = httpx.Timeout(self.stall_timeout)
        self.headers = {**self.headers, "Accept-Encoding": "identity"}
        self.partial = self.dest.with_suffix(self.dest.suffix + ".partial")
        self.sidecar = self.dest.with_suffix(self.dest.suffix + ".partial.json")
        self._lock = threading.Lock()
        self._ssl: ssl.SSLContext | None = None

    # ------------------------------------------------------------------ common
    def retry(self, attempt: Callable[[], Any], progress: Callable[[], int] | None = None) -> Any:
        return with_retries(
            self.policy, attempt, url=self.target.url, stall_timeout=self.stall_timeout, progress=progress
        )

    def get(self, extra: Mapping[str, str] | None = None) -> httpx.Response:
        request = self.client.build_request(
            "GET", self.target.url, headers={**self.headers, **(extra or {})}, timeout=self.timeout
        )
        return self.client.send(request, stream=True)

    def check_space(self, needed: int) -> None:
        free = int(self.disk_usage(self.dest.parent).free)
        if free < needed:
            raise OperationFailed(
                f"not enough free disk space in '{self.dest.parent}': the download needs "
                f"{human_size(needed)} ({needed} bytes) but only {human_size(free)} ({free} bytes) are free",
                hint="free some disk space or move the model store to a larger disk",
            )

    def discard(self) -> None:
        unlink_quietly(self.partial)
        unlink_quietly(self.sidecar)

    def verify(self, digest: str, size: int) -> None:
        expected_size, expected = self.target.size, self.target.sha256
        shown = display_url(self.target.url)
        if expected_size is not None and size != expected_size:
            self.discard()
            raise IntegrityError(
                f"size mismatch for {shown}: expected {expected_size} bytes, got {size}",
                hint="run the command again; if it persists the source file has changed",
            )
        if expected is not None and digest != expected:
            self.discard()
            raise IntegrityError(
                f"digest mismatch for {shown}: expected {expected}, got {digest}",
                hint="run the command again; if it persists the source file has changed",
            )

    def ssl_context(self) -> ssl.SSLContext:
        """httpx's TLS context (same CA rules), made once per download, for the raw sessions."""
        with self._lock:
            if self._ssl is None:
                self._ssl = httpx.create_ssl_context(trust_env=True)
            return self._ssl

    def publish(self) -> None:
        os.replace(self.partial, self.dest)
        unlink_quietly(self.sidecar)
        fsync_dir(self.dest.parent)

    # ------------------------------------------------------------------ probe
    def run(self) -> str:
        ranges, total, first = self.retry(lambda: probe(self.get, self.target.url, self.target.auth_hint))
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
            from slmctl.sources.parallel import ParallelDownload

            return ParallelDownload(self, size).run()
        return self._run_single(first, size)

    # ------------------------------------------------------------------ single stream
    def _run_single(self, first: httpx.Response | None, size: int | None) -> str:
        unlink_quietly(self.sidecar)
        try:
            self.check_space(size or 0)
        except BaseException:
            if first is not None:
                first.close()
            raise
        progress = Progress(size, callback=self.on_progress)
        unused = [first] if first is not None else []  # the probe's 200 response is the first attempt
        hasher = hashlib.sha256()

        def attempt() -> int:
            nonlocal hasher
            response = unused.pop() if unused else self.get()
            hasher, progress.completed, written = hashlib.sha256(), 0, 0
            with closing(response), open(self.partial, "wb") as fh:
                check_response(response, self.target.url, self.target.auth_hint)
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
            written = self.retry(attempt)
        except BaseException:
            for response in unused:
                response.close()
            unlink_quietly(self.partial)  # cannot resume without ranges
            raise
        digest = DIGEST_PREFIX + hasher.hexdigest()
        self.verify(digest, written)
        self.publish()
        return digest
