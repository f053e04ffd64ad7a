"""Rendering shared by the commands: JSON, aligned tables, human sizes, times and durations.

Only plain text here (no colours, no redraws), so output is the same in a terminal and in CI logs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import IO, Any

from slmctl.units import human_size

__all__ = ["duration", "human_size", "print_json", "result_object", "stats_lines", "table", "time_ago"]


def print_json(data: Any, stream: IO[str]) -> None:
    """One JSON document, indented, followed by a newline."""
    out = stream
    out.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    out.flush()


def time_ago(when: datetime, now: datetime | None = None) -> str:
    """``2 minutes ago``, ``3 days ago``."""
    now = now or datetime.now(timezone.utc)
    seconds = max(0, int((now - when).total_seconds()))
    for unit, span in (("year", 31536000), ("month", 2592000), ("week", 604800), ("day", 86400),
                       ("hour", 3600), ("minute", 60)):
        if seconds >= span:
            n = seconds // span
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "just now" if seconds < 5 else f"{seconds} seconds ago"


def duration(ns: int) -> str:
    """A duration in nanoseconds as Ollama's --verbose prints it: ``1.52s``, ``35.2ms``, ``812µs``."""
    if ns >= 1_000_000_000:
        return f"{ns / 1e9:.3f}s"
    if ns >= 1_000_000:
        return f"{ns / 1e6:.3f}ms"
    return f"{ns / 1e3:.3f}µs"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], stream: IO[str]) -> None:
    """Left-aligned columns separated by at least three spaces (stable for ``awk``/``cut``)."""
    out = stream
    widths = [max(len(str(cell)) for cell in col) for col in zip(headers, *rows)]
    for row in (headers, *rows):
        cells = [str(c).ljust(w) for c, w in zip(row, widths)]
        out.write("   ".join(cells).rstrip() + "\n")
    out.flush()


def stats_lines(stats: Any) -> list[str]:
    """The ``--verbose`` statistics block (same lines as Ollama's)."""
    return [
        f"total duration:       {duration(stats.total_duration)}",
        f"load duration:        {duration(stats.load_duration)}",
        f"prompt eval count:    {stats.prompt_eval_count} token(s)",
        f"prompt eval duration: {duration(stats.prompt_eval_duration)}",
        f"prompt eval rate:     {stats.prompt_eval_rate:.2f} tokens/s",
        f"eval count:           {stats.eval_count} token(s)",
        f"eval duration:        {duration(stats.eval_duration)}",
        f"eval rate:            {stats.eval_rate:.2f} tokens/s",
    ]


def result_object(model: str, response: str, stats: Any) -> dict[str, Any]:
    """The ``run --json`` object: the last object of Ollama's ``/api/generate``, as ``serve`` answers it."""
    from slmctl.wire.ollama import generate_final

    return generate_final(model, stats, response)
