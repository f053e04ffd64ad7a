"""One download: what to fetch (:class:`DownloadTarget`) and the job (:class:`Job`).

A :class:`Job` holds one download's settings and the steps both of its modes share: retries, a GET of
the target, the free-space check, verification of the digest and size, discarding the partial data and
publishing the finished file. The single-stream mode lives in :mod:`.download`, the parallel one in
:mod:`.parallel`; both run a job, neither is imported here.
"""

from __future__ import annotations

import os
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from slmctl.errors import IntegrityError, OperationFailed
from slmctl.fileio import fsync_dir, unlink_quietly
from slmctl.sources.downloader.http import RetryPolicy, display_url, with_retries
from slmctl.units import human_size

__all__ = ["DownloadTarget", "Job"]


@dataclass(frozen=True)
class DownloadTarget:
    """What to fetch: ``size`` and ``sha256`` (``sha256:<hex>``) are verified when given; ``auth_hint``
    explains a refusal (401/403; default: the Hugging Face token hint)."""

    url: str
    size: int | None = None
    sha256: str | None = None
    auth_hint: str | None = None


@dataclass
class Job:
    """One download's settings and the steps both modes share (retries, GET, checks, verification, publish)."""

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
