"""Tests of the parallel download's layout (slmctl.sources.downloader.parts) and its following sha256 hasher."""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slmctl.sources.downloader.ordered_hash import FollowingHasher
from slmctl.sources.downloader.parts import MAX_PARTS, Part, PartQueue, frontier, load_layout, plan_parts, sidecar_state


@given(size=st.integers(1, 1 << 40), min_part=st.integers(1, 1 << 30))
def test_plan_parts_covers_the_file(size: int, min_part: int) -> None:
    parts = plan_parts(size, min_part)
    assert parts[0].start == 0 and parts[-1].end == size
    assert all(a.end == b.start for a, b in zip(parts, parts[1:]))
    assert 1 <= len(parts) <= MAX_PARTS
    assert all(p.end - p.start >= min(min_part, size) for p in parts)
    assert len(parts) == 1 or max(p.end - p.start for p in parts) < 2 * max(min_part, -(-size // MAX_PARTS))


def test_frontier_and_queue_follow_file_order() -> None:
    layout = [Part(0, 10), Part(10, 20), Part(20, 30)]
    queue = PartQueue(layout)
    assert [queue.take(), queue.take()] == layout[:2]
    assert frontier(layout) == 0
    layout[1].done = 10  # a later part finishing first does not move the frontier
    assert frontier(layout) == 0
    layout[0].done = 4
    assert frontier(layout) == 4
    layout[0].done = 10
    assert frontier(layout) == 20
    layout[2].done = 10
    assert frontier(layout) == 30
    assert queue.take() is layout[2] and queue.take() is None
    assert len(PartQueue(layout)) == 0  # nothing left to hand out once every part is finished


def test_load_layout_accepts_only_a_matching_record(tmp_path: Path) -> None:
    sidecar, partial = tmp_path / "f.partial.json", tmp_path / "f.partial"
    partial.write_bytes(b"\0" * 30)
    layout = [Part(0, 15, 5), Part(15, 30, 15)]
    key = {"url": "http://h/f", "size": 30, "declared_size": 30, "sha256": "sha256:" + "0" * 64}
    sidecar.write_text(sidecar_state("http://h/f", 30, key["sha256"], layout))
    assert load_layout(sidecar, partial, **key) == layout
    assert load_layout(sidecar, partial, **{**key, "url": "http://h/other"}) is None
    assert load_layout(sidecar, partial, **{**key, "sha256": None}) is None
    partial.write_bytes(b"\0" * 29)
    assert load_layout(sidecar, partial, **key) is None
    partial.write_bytes(b"\0" * 30)
    for broken in ([{"start": 0, "end": 15, "done": 16}, {"start": 15, "end": 30, "done": 0}],  # done > length
                   [{"start": 0, "end": 15, "done": 0}, {"start": 16, "end": 30, "done": 0}],  # a hole
                   [{"start": 0, "end": 15, "done": 0}],  # does not reach the end
                   [{"start": 0, "end": "x", "done": 0}]):
        state = json.loads(sidecar.read_text())
        sidecar.write_text(json.dumps({**state, "parts": broken}))
        assert load_layout(sidecar, partial, **key) is None
    sidecar.write_text("{not json")
    assert load_layout(sidecar, partial, **key) is None


def test_following_hasher_hashes_parts_written_out_of_order(tmp_path: Path) -> None:
    data = random.Random(7).randbytes(3_000_000)
    path = tmp_path / "f.partial"
    path.write_bytes(b"\0" * len(data))
    layout = plan_parts(len(data), 100_000)
    hasher = FollowingHasher(path, len(data), lambda: frontier(layout), threading.Event())
    hasher.start()
    order = list(range(len(layout)))
    random.Random(3).shuffle(order)
    with open(path, "r+b", buffering=0) as fh:
        for index in order:  # later parts first, in pieces, as workers would
            part = layout[index]
            for offset in range(part.start, part.end, 40_000):
                piece = data[offset:min(offset + 40_000, part.end)]
                fh.seek(offset)
                fh.write(piece)
                part.done += len(piece)
            time.sleep(0.001)
    assert hasher.result() == "sha256:" + hashlib.sha256(data).hexdigest()


def test_following_hasher_stops_when_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "f.partial"
    path.write_bytes(b"\0" * 1000)
    cancel = threading.Event()
    hasher = FollowingHasher(path, 1000, lambda: 500, cancel)
    hasher.start()
    time.sleep(0.05)
    assert hasher.position == 500  # never past the downloaded prefix
    cancel.set()
    with pytest.raises(RuntimeError, match="stopped at byte 500"):
        hasher.result()
