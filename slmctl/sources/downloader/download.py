"""Transport-independent, resumable, verified file downloads over HTTP(S).

:func:`download` fetches one :class:`~.job.DownloadTarget` to ``dest`` as a :class:`~.job.Job`:

* A probe ``GET`` with ``Range: bytes=0-0`` tells whether the server honours ranges (``206``) and the
  total size (``Content-Range``). With ranges and a known size, :mod:`.parallel` fetches the file as
  Range parts (:mod:`.parts`: at least ``min_part_size`` bytes each, taken in file order by ``parts``
  worker threads) into ``<dest>.partial`` (preallocated) while ``<dest>.partial.json`` records per-part
  progress, written every ``checkpoint_interval`` seconds *after* an fsync of the data it describes:
  after a crash, Ctrl-C or SIGKILL the next run re-downloads at most the unrecorded tail of each part.
  A sidecar that does not match url/size/sha256 (or a partial of the wrong size) means starting over.
* Without range support (or size) the body is streamed once (here); a retry restarts from byte 0.
* Hashing while bytes arrive: a single stream is hashed chunk by chunk; parallel parts are hashed in
  order by a :class:`~.ordered_hash.FollowingHasher` thread that trails the contiguous downloaded
  prefix. A digest or size mismatch deletes the partial data and raises :class:`IntegrityError`.
* Durability without a pause at the end: the checkpoints (every ``checkpoint_interval`` s) fsync the
  data while the transfer goes on, so the final fsync before the rename only flushes the last moments.
* Retries (see :mod:`.http`): 5xx, 408, 429 (``Retry-After``), connection errors, bodies cut short
  and stalls (no byte for ``stall_timeout`` s) with exponential backoff + jitter.
* Free disk space is checked first (``OperationFailed``); a lock on ``<dest>.lock`` makes a second
  download of the same dest wait and then reuse the finished, verified file. The lock file is deleted
  when the download ends, however it ends (:func:`slmctl.fileio.job_lock`).
* Success: fsync, rename ``.partial`` to ``dest``, drop the sidecar. KeyboardInterrupt keeps both
  (parallel mode) for the next run and re-raises. ``on_progress(completed, total)`` may be called
  from worker threads, but never concurrently.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable, Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx

from slmctl.errors import IntegrityError
from slmctl.fileio import DIGEST_PREFIX, job_lock, sha256_file, unlink_quietly
from slmctl.sources.downloader import rawget
from slmctl.sources.downloader.http import (
    Progress,
    RetryPolicy,
    Transient,
    check_response,
    default_client,
    display_url,
    probe,
)
from slmctl.sources.downloader.job import DownloadTarget, Job
from slmctl.sources.downloader.parallel import ParallelDownload

__all__ = ["MiB", "DownloadTarget", "download"]

MiB = 1 << 20


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
    end. ``raw_bodies`` (default: when no factory is injected) sends the parts through :mod:`.rawget`
    when it supports the URL, with the proxies of ``env`` (default ``os.environ``). Raises
    ``DownloadError`` (a ``NetworkError`` with ``.status``), ``IntegrityError`` or ``OperationFailed``.
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
            return _run(job)


def _reuse_existing(dest: Path, target: DownloadTarget) -> str | None:
    """The digest of an already downloaded, matching ``dest``; a non-matching one is removed."""
    if not dest.is_file():
        return None
    digest, size = sha256_file(dest)
    if (target.sha256 is None or digest == target.sha256) and (target.size is None or size == target.size):
        return digest
    unlink_quietly(dest)
    return None


def _run(job: Job) -> str:
    """Probe the target, then fetch it in parallel Range parts or as one stream."""
    ranges, total, first = job.retry(lambda: probe(job.get, job.target.url, job.target.auth_hint))
    expected = job.target.size
    if expected is not None and total is not None and total != expected:
        if first is not None:
            first.close()
        raise IntegrityError(
            f"size mismatch for {display_url(job.target.url)}: expected {expected} bytes, "
            f"the server has {total}",
            hint="the source file has changed; refresh the model metadata and try again",
        )
    size = expected if expected is not None else total
    if ranges and size is not None and size > 0:
        return ParallelDownload(job, size).run()
    return _run_single(job, first, size)


def _run_single(job: Job, first: httpx.Response | None, size: int | None) -> str:
    """One streamed body, hashed while it arrives; a retry restarts from byte 0."""
    unlink_quietly(job.sidecar)
    try:
        job.check_space(size or 0)
    except BaseException:
        if first is not None:
            first.close()
        raise
    progress = Progress(size, callback=job.on_progress)
    unused = [first] if first is not None else []  # the probe's 200 response is the first attempt
    hasher = hashlib.sha256()

    def attempt() -> int:
        nonlocal hasher
        response = unused.pop() if unused else job.get()
        hasher, progress.completed, written = hashlib.sha256(), 0, 0
        with closing(response), open(job.partial, "wb") as fh:
            check_response(response, job.target.url, job.target.auth_hint)
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
        written = job.retry(attempt)
    except BaseException:
        for response in unused:
            response.close()
        unlink_quietly(job.partial)  # cannot resume without ranges
        raise
    digest = DIGEST_PREFIX + hasher.hexdigest()
    job.verify(digest, written)
    job.publish()
    return digest
