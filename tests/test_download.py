"""Tests of :mod:`slmctl.sources.downloader.download` against a real loopback HTTP server with injected faults."""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from slmctl.errors import IntegrityError, NetworkError, OperationFailed
from slmctl.fileio import sha256_bytes
from slmctl.sources.downloader.download import DownloadTarget, download
from slmctl.sources.downloader.http import default_client, parse_retry_after
from slmctl.sources.downloader.parts import plan_parts
from tests.http_fixtures import PROBE_RANGE, Fault, FileServer

SIZE = 3 * 1024 * 1024 + 12345
PART = 512 * 1024
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data() -> bytes:
    return random.Random(1234).randbytes(SIZE)


@pytest.fixture
def server(data: bytes) -> Iterator[FileServer]:
    with FileServer(data) as srv:
        yield srv


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def loopback_client() -> httpx.Client:
    """No proxy variables for loopback tests (the default client honours them)."""
    return httpx.Client(trust_env=False)


Fetch = Callable[..., str]


def _fetch(raw: bool, srv: FileServer, data: bytes, dest: Path, **kwargs: object) -> str:
    target = kwargs.pop("target", None) or DownloadTarget(srv.url, len(data), sha256_bytes(data))
    kwargs.setdefault("sleep", Sleeps())
    kwargs.setdefault("stall_timeout", 5.0)
    return download(loopback_client, target, dest, parts=4, min_part_size=PART,  # type: ignore[arg-type]
                    raw_bodies=raw, env={}, **kwargs)


@pytest.fixture(params=["httpx", "raw"])
def fetch(request: pytest.FixtureRequest) -> Fetch:
    """Download with the parts' bodies read through httpx, or through the raw http.client sessions."""
    return functools.partial(_fetch, request.param == "raw")


def part_requests(srv: FileServer) -> list[str | None]:
    return [r for r in srv.range_headers if r != PROBE_RANGE]


def assert_clean(dest: Path) -> None:
    assert not dest.with_suffix(".bin.partial").exists()
    assert not dest.with_suffix(".bin.partial.json").exists()


def test_plain_download_parallel_parts(fetch: Fetch, server: FileServer, data: bytes, tmp_path: Path) -> None:
    dest = tmp_path / "model.bin"
    seen: list[tuple[int, int | None]] = []
    digest = fetch(server, data, dest, on_progress=lambda done, total: seen.append((done, total)))
    assert digest == sha256_bytes(data)
    assert dest.read_bytes() == data
    assert_clean(dest)
    planned = plan_parts(SIZE, PART)
    assert len(planned) == 6  # more parts than the 4 workers: they take them in file order
    assert sorted(part_requests(server), key=lambda r: int(r[6:].split("-")[0])) == [
        f"bytes={p.start}-{p.end - 1}" for p in planned
    ]
    assert server.bytes_served == SIZE + 1  # the parts plus the 1-byte probe
    assert seen[-1] == (SIZE, SIZE)


def test_unknown_size_and_digest(fetch: Fetch, server: FileServer, data: bytes, tmp_path: Path) -> None:
    dest = tmp_path / "model.bin"
    assert fetch(server, data, dest, target=DownloadTarget(server.url, None, None)) == sha256_bytes(data)
    assert dest.read_bytes() == data


def test_server_without_ranges(fetch: Fetch, data: bytes, tmp_path: Path) -> None:
    with FileServer(data, ranges=False) as srv:
        dest = tmp_path / "model.bin"
        assert fetch(srv, data, dest) == sha256_bytes(data)
        assert dest.read_bytes() == data
        assert srv.bytes_served == SIZE  # the probe's 200 response is the download
        assert_clean(dest)


def test_server_without_ranges_restarts_after_drop(fetch: Fetch, data: bytes, tmp_path: Path) -> None:
    with FileServer(data, ranges=False) as srv:
        srv.faults.append(Fault(drop_after=300_000))
        sleeps = Sleeps()
        dest = tmp_path / "model.bin"
        assert fetch(srv, data, dest, sleep=sleeps) == sha256_bytes(data)
        assert dest.read_bytes() == data
        assert len(sleeps) == 1
        assert srv.bytes_served == SIZE + 300_000  # no resume without ranges: a full restart


def test_connection_dropped_mid_part_is_resumed(fetch: Fetch, server: FileServer, data: bytes, tmp_path: Path) -> None:
    server.faults.append(Fault(drop_after=200_000))
    sleeps = Sleeps()
    dest = tmp_path / "model.bin"
    assert fetch(server, data, dest, sleep=sleeps) == sha256_bytes(data)
    assert dest.read_bytes() == data
    assert len(sleeps) == 1
    assert len(part_requests(server)) == len(plan_parts(SIZE, PART)) + 1
    assert server.bytes_served <= SIZE + 1 + 64 * 1024  # at most the unrecorded chunk is fetched twice


def test_stall_is_detected_and_retried(fetch: Fetch, server: FileServer, data: bytes, tmp_path: Path) -> None:
    server.faults.append(Fault(stall_after=100_000, stall_s=1.5))
    dest = tmp_path / "model.bin"
    started = time.monotonic()
    assert fetch(server, data, dest, stall_timeout=0.3) == sha256_bytes(data)
    assert time.monotonic() - started < 1.5
    assert dest.read_bytes() == data


def test_5xx_then_success(fetch: Fetch, server: FileServer, data: bytes, tmp_path: Path) -> None:
    server.faults += [Fault(status=503), Fault(status=500)]
    sleeps = Sleeps()
    assert fetch(server, data, tmp_path / "model.bin", sleep=sleeps) == sha256_bytes(data)
    assert len(sleeps) == 2


def test_429_honours_retry_after(fetch: Fetch, server: FileServer, data: bytes, tmp_path: Path) -> None:
    server.faults.append(Fault(status=429, headers={"Retry-After": "7"}))
    sleeps = Sleeps()
    assert fetch(server, data, tmp_path / "model.bin", sleep=sleeps) == sha256_bytes(data)
    assert sleeps == [7.0]


def test_retries_exhausted(fetch: Fetch, server: FileServer, data: bytes, tmp_path: Path) -> None:
    server.faults += [Fault(status=503)] * 10
    with pytest.raises(NetworkError) as info:
        fetch(server, data, tmp_path / "model.bin", retries=2)
    assert info.value.status == 503  # type: ignore[attr-defined]
    assert "after 3 attempts" in info.value.message


def test_404_is_final(fetch: Fetch, server: FileServer, data: bytes, tmp_path: Path) -> None:
    server.status_override = 404
    sleeps = Sleeps()
    with pytest.raises(NetworkError) as info:
        fetch(server, data, tmp_path / "model.bin", sleep=sleeps)
    assert info.value.status == 404  # type: ignore[attr-defined]
    assert "/file" in info.value.message
    assert sleeps == [] and len(server.range_headers) == 1


def test_401_hints_at_hf_token(fetch: Fetch, server: FileServer, data: bytes, tmp_path: Path) -> None:
    server.status_override = 401
    with pytest.raises(NetworkError) as info:
        fetch(server, data, tmp_path / "model.bin")
    assert info.value.status == 401  # type: ignore[attr-defined]
    assert "HF_TOKEN" in (info.value.hint or "")


@pytest.mark.parametrize("ranges", [True, False])
def test_wrong_digest_leaves_nothing(fetch: Fetch, data: bytes, tmp_path: Path, ranges: bool) -> None:
    wrong = "sha256:" + "0" * 64
    with FileServer(data, ranges=ranges) as srv:
        dest = tmp_path / "model.bin"
        with pytest.raises(IntegrityError) as info:
            fetch(srv, data, dest, target=DownloadTarget(srv.url, SIZE, wrong))
    assert wrong in info.value.message and sha256_bytes(data) in info.value.message
    assert not dest.exists()
    assert_clean(dest)


def test_size_mismatch(fetch: Fetch, server: FileServer, data: bytes, tmp_path: Path) -> None:
    with pytest.raises(IntegrityError, match="size"):
        fetch(server, data, tmp_path / "model.bin", target=DownloadTarget(server.url, SIZE + 1, None))


def test_not_enough_disk_space(fetch: Fetch, server: FileServer, data: bytes, tmp_path: Path) -> None:
    dest = tmp_path / "model.bin"
    with pytest.raises(OperationFailed) as info:
        fetch(server, data, dest, disk_usage=lambda _path: SimpleNamespace(free=1000))
    assert str(SIZE) in info.value.message and "1000" in info.value.message
    assert not dest.exists()
    assert_clean(dest)


def test_keyboard_interrupt_keeps_partial_for_resume(fetch: Fetch, server: FileServer, data: bytes, tmp_path: Path) -> None:
    dest = tmp_path / "model.bin"
    server.chunk_delay = 0.005

    def interrupt(done: int, total: int | None) -> None:
        if done > SIZE // 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fetch(server, data, dest, on_progress=interrupt)
    sidecar = json.loads(dest.with_suffix(".bin.partial.json").read_text())
    recorded = sum(p["done"] for p in sidecar["parts"])
    assert recorded > 0
    server.chunk_delay = 0
    server.reset_counters()
    assert fetch(server, data, dest) == sha256_bytes(data)
    assert dest.read_bytes() == data
    assert server.bytes_served <= SIZE - recorded + 1
    assert_clean(dest)


def test_mismatched_sidecar_starts_over(fetch: Fetch, server: FileServer, data: bytes, tmp_path: Path) -> None:
    dest = tmp_path / "model.bin"
    dest.with_suffix(".bin.partial").write_bytes(b"\0" * SIZE)
    parts = [{"start": 0, "end": SIZE, "done": SIZE}]
    state = {"version": 1, "url": server.url + "?other", "size": SIZE, "sha256": None, "parts": parts}
    dest.with_suffix(".bin.partial.json").write_text(json.dumps(state))
    assert fetch(server, data, dest) == sha256_bytes(data)
    assert dest.read_bytes() == data


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
@pytest.mark.parametrize("signame", ["SIGKILL", "SIGINT"])
def test_resume_after_killed_process(fetch: Fetch, server: FileServer, data: bytes, tmp_path: Path, signame: str) -> None:
    dest = tmp_path / "model.bin"
    sidecar = dest.with_suffix(".bin.partial.json")
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        import httpx
        from slmctl.sources.downloader.download import DownloadTarget, download
        client = lambda: httpx.Client(trust_env=False)
        download(client, DownloadTarget({server.url!r}, {SIZE}, {sha256_bytes(data)!r}), Path({str(dest)!r}),
                 parts=4, min_part_size={PART}, checkpoint_interval=0.05)
        """
    )
    server.chunk = 16 * 1024
    server.chunk_delay = 0.02
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if sum(p["done"] for p in json.loads(sidecar.read_text())["parts"]) > SIZE // 5:
                    break
            except (OSError, ValueError):
                pass
            assert proc.poll() is None, "the download finished before it could be stopped"
            time.sleep(0.02)
        else:
            pytest.fail("no progress recorded")
        proc.send_signal(getattr(signal, signame))
        assert proc.wait(10) != 0
    finally:
        proc.kill()
        proc.wait()
    recorded = sum(p["done"] for p in json.loads(sidecar.read_text())["parts"])
    assert 0 < recorded < SIZE
    server.chunk_delay = 0
    server.reset_counters()
    assert fetch(server, data, dest) == sha256_bytes(data)
    assert dest.read_bytes() == data
    assert server.bytes_served <= SIZE - recorded + 1 < SIZE  # only the unrecorded tails are fetched again
    assert_clean(dest)


def test_concurrent_downloads_share_the_work(fetch: Fetch, server: FileServer, data: bytes, tmp_path: Path) -> None:
    dest = tmp_path / "model.bin"
    server.chunk_delay = 0.002
    results: list[str] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(fetch(server, data, dest))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert results == [sha256_bytes(data)] * 2
    assert dest.read_bytes() == data
    assert server.bytes_served <= SIZE + 2
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == ["model.bin"]


def test_default_client_honours_environment_and_retry_after_forms() -> None:
    with default_client() as client:
        assert client.trust_env and client.follow_redirects
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past
    assert parse_retry_after("soon") is None
