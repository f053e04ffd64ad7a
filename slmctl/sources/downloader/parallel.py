"""The downloader's parallel mode: Range parts fetched by worker threads into one preallocated file.

:class:`ParallelDownload` runs one :class:`~.job.Job` whose server honours ranges:

* Layout (:mod:`.parts`): many parts, taken in file order by ``job.parts`` workers; a sidecar that
  matches resumes where the last run stopped (only unrecorded tails are fetched again).
* Bodies: through a per-worker :class:`~.rawget.RawSession` (kept-alive connections, one copy per
  byte) when ``job.raw``, else the job's httpx client (pooled, thread-safe).
* A :class:`~.ordered_hash.FollowingHasher` hashes the downloaded prefix meanwhile.
* The main thread checkpoints every ``job.checkpoint_interval`` s: fsync of the data, *then* the
  sidecar describing it (never more than what is on disk). Frequent fsyncs keep the kernel writing
  back during the transfer, so the last one before the rename is short.
* The first real failure of a worker cancels the others and is raised; Ctrl-C leaves the partial file
  and the sidecar for the next run.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import closing
from typing import Any

from slmctl.errors import OperationFailed
from slmctl.fileio import write_atomic
from slmctl.sources.downloader.http import (Cancelled, DownloadError, Progress, Transient, check_response,
                                            display_url)
from slmctl.sources.downloader.job import Job
from slmctl.sources.downloader.ordered_hash import FollowingHasher
from slmctl.sources.downloader.parts import Part, PartQueue, frontier, load_layout, plan_parts, sidecar_state
from slmctl.sources.downloader.rawget import RawSession, UnsupportedRoute

#: Most bytes asked of one socket read on the raw path.
READ_SIZE = 1 << 20


class ParallelDownload:
    def __init__(self, job: Job, size: int) -> None:
        self.job = job
        self.size = size
        self.layout: list[Part] = []
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()

    def run(self) -> str:
        """Download every part, verify the digest, publish ``job.dest``; returns ``sha256:<hex>``."""
        job, size = self.job, self.size
        t = job.target
        layout = load_layout(job.sidecar, job.partial, url=t.url, size=size, declared_size=t.size, sha256=t.sha256)
        remaining = size - sum(p.done for p in layout) if layout else size
        job.check_space(remaining)
        if layout is None:
            job.discard()
            layout = plan_parts(size, job.min_part_size)
            with open(job.partial, "wb") as fh:
                fh.truncate(size)
        self.layout = layout
        progress = Progress(size, size - remaining, job.on_progress)
        queue = PartQueue(layout)
        workers = [threading.Thread(target=self._worker, args=(queue, progress), daemon=True, name=f"slmctl-part-{i}")
                   for i in range(min(job.parts, len(queue)))]
        hasher = FollowingHasher(job.partial, size, lambda: frontier(self.layout), job.policy.cancel)
        with open(job.partial, "r+b") as anchor:
            self._checkpoint(anchor)
            try:
                hasher.start()
                for worker in workers:
                    worker.start()
                while any(w.is_alive() for w in workers):
                    next(w for w in workers if w.is_alive()).join(job.checkpoint_interval)
                    self._checkpoint(anchor)
            except BaseException:
                job.policy.cancel.set()
                for worker in workers:
                    worker.join(timeout=1.0)
                self._checkpoint(anchor)
                raise
            self._checkpoint(anchor)
        if self.errors:  # the first real failure, not the Cancelled of the workers it stopped
            raise next((e for e in self.errors if not isinstance(e, Cancelled)), self.errors[0])
        try:
            digest = hasher.result()
        except OSError as exc:
            raise OperationFailed(f"cannot read '{job.partial}' back to hash it: {exc}") from exc
        job.verify(digest, size)
        job.publish()
        return digest

    def _worker(self, queue: PartQueue, progress: Progress) -> None:
        session = RawSession(timeout=self.job.stall_timeout, context=self.job.ssl_context,
                             env=self.job.env) if self.job.raw else None
        try:
            while (part := queue.take()) is not None:
                try:
                    self.job.retry(lambda part=part: self._fetch(part, progress, session),
                                   progress=lambda p=part: p.done)
                except UnsupportedRoute:  # redirected to a URL behind a proxy only httpx speaks
                    if session is None:
                        raise
                    session.close()
                    session = None
                    self.job.retry(lambda part=part: self._fetch(part, progress, None), progress=lambda p=part: p.done)
        except BaseException as exc:  # reported to the main thread
            self.errors.append(exc)
            self.job.policy.cancel.set()
        finally:
            if session is not None:
                session.close()

    def _fetch(self, part: Part, progress: Progress, session: RawSession | None) -> None:
        """One attempt at the rest of ``part``; raises Transient when the body ends early."""
        job = self.job
        start = part.start + part.done
        headers = {"Range": f"bytes={start}-{part.end - 1}"}
        response: Any = session.get(job.target.url, {**job.headers, **headers}) if session else job.get(headers)
        with closing(response), open(job.partial, "r+b", buffering=0) as fh:
            check_response(response, job.target.url, job.target.auth_hint)
            if response.status_code != 206:
                raise DownloadError(
                    f"{display_url(job.target.url)} ignored a range request (HTTP {response.status_code})",
                    url=job.target.url,
                    status=response.status_code,
                )
            fh.seek(start)
            for chunk in self._body(response, session is not None):
                if job.policy.cancel.is_set():
                    raise Cancelled()
                data = chunk[: part.left]
                while data:
                    n = fh.write(data) or 0
                    data = data[n:]
                    with self._lock:
                        part.done += n
                    progress.advance(n)
                if part.finished:
                    break
        if not part.finished:
            raise Transient(f"connection closed with {part.left} bytes of a part left")

    @staticmethod
    def _body(response: Any, raw: bool) -> Iterator[memoryview]:
        """The body's bytes as they arrive."""
        pieces = iter(lambda: response.read1(READ_SIZE), b"") if raw else response.iter_raw()
        for chunk in pieces:
            yield memoryview(chunk)

    def _checkpoint(self, anchor: Any) -> None:
        """fsync the data, then record what it holds (never more than what is on disk)."""
        with self._lock:
            snapshot = [Part(p.start, p.end, p.done) for p in self.layout]
        job = self.job
        os.fsync(anchor.fileno())
        write_atomic(job.sidecar, sidecar_state(job.target.url, job.target.size, job.target.sha256, snapshot))

