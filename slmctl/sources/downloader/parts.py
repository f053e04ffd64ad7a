"""The layout of a download split into Range parts, and its sidecar record.

A file of ``size`` bytes is cut into parts of at least ``min_part_size`` bytes and at most
:data:`MAX_PARTS` of them — many more parts than workers, so that workers take them in file order
(:class:`PartQueue`) and the downloaded prefix (:func:`frontier`) grows steadily: the sha256, which must
read the file in order, can then follow the transfer instead of waiting for the last part.

The sidecar (``<dest>.partial.json``) records, for one target (url, size, sha256), how many bytes of
each part are on disk; :func:`load_layout` accepts it only when it matches the target and the partial
file, and describes a contiguous cover of the file.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SIDECAR_VERSION = 1
MAX_PARTS = 64


@dataclass
class Part:
    start: int
    end: int  # exclusive
    done: int = 0

    @property
    def finished(self) -> bool:
        return self.start + self.done >= self.end

    @property
    def left(self) -> int:
        return self.end - self.start - self.done


def plan_parts(size: int, min_part_size: int, max_parts: int = MAX_PARTS) -> list[Part]:
    """Equal parts covering ``size`` bytes: at least ``min_part_size`` each, at most ``max_parts``."""
    part = max(min_part_size, -(-size // max_parts), 1)
    count = max(1, size // part)  # rounded down: every part gets at least ``part`` bytes
    bounds = [size * i // count for i in range(count + 1)]
    return [Part(bounds[i], bounds[i + 1]) for i in range(count)]


def frontier(layout: list[Part]) -> int:
    """How many leading bytes are downloaded: every finished part, then what the first unfinished holds.

    Safe to call while workers advance ``done`` (plain int reads that only grow).
    """
    for part in layout:
        if not part.finished:
            return part.start + part.done
    return layout[-1].end if layout else 0


class PartQueue:
    """Hands each unfinished part to one worker, in file order."""

    def __init__(self, layout: list[Part]) -> None:
        self._pending = [part for part in layout if not part.finished]
        self._next = 0
        self._lock = threading.Lock()

    def take(self) -> Part | None:
        with self._lock:
            if self._next >= len(self._pending):
                return None
            self._next += 1
            return self._pending[self._next - 1]

    def __len__(self) -> int:
        return len(self._pending)


def sidecar_state(url: str, size: int | None, sha256: str | None, snapshot: list[Part]) -> str:
    """The sidecar's JSON text for a snapshot of the layout."""
    return json.dumps({"version": SIDECAR_VERSION, "url": url, "size": size, "sha256": sha256,
                       "parts": [{"start": p.start, "end": p.end, "done": p.done} for p in snapshot]})


def load_layout(sidecar: Path, partial: Path, *, url: str, size: int, declared_size: int | None,
                sha256: str | None) -> list[Part] | None:
    """The recorded layout when the sidecar and the partial file match this target, else None."""
    try:
        state: Any = json.loads(sidecar.read_text(encoding="utf-8"))
        if partial.stat().st_size != size:
            return None
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or (state.get("version"), state.get("url"), state.get("size"),
                                       state.get("sha256")) != (SIDECAR_VERSION, url, declared_size, sha256):
        return None
    try:
        layout = [Part(int(p["start"]), int(p["end"]), int(p["done"])) for p in state["parts"]]
    except (KeyError, TypeError, ValueError):
        return None
    position = 0
    for part in layout:
        if part.start != position or part.end <= part.start or not 0 <= part.done <= part.end - part.start:
            return None
        position = part.end
    return layout if position == size and layout else None
