"""The benchmark history: one compact JSON line per ``slmctl bench`` run in ``<home>/bench/history.jsonl``.

Owns the file format, the appending (under a ``filelock.FileLock``, append + flush + fsync, and a
newline first when an earlier writer crashed mid-line, so a torn line never swallows the next one),
the tolerant reading (damaged lines are skipped) and the listing shown by ``slmctl bench --history``.

A line: ``{"created_at", "slmctl_version", "schema_version", "cpu", "configs": [{"key", "model",
"format", "device", "medians": {figure: median}, "unstable": [...]}]}``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from slmctl.errors import OperationFailed
from slmctl.services.bench.model import ALL_FIGURES, BenchDocument
from slmctl.services.bench.report import FIGURE_LABELS, format_date, format_with_unit

HISTORY_FILE = "history.jsonl"
LOCK_TIMEOUT = 30.0


def history_path(home: Path) -> Path:
    return Path(home) / "bench" / HISTORY_FILE


def history_entry(doc: BenchDocument) -> dict[str, Any]:
    """The compact record of one run kept in the history."""
    cpu = doc.machine.get("cpu") if isinstance(doc.machine.get("cpu"), dict) else {}
    configs = []
    for summary in doc.summary:
        devices = sorted({s.device for s in doc.samples if s.config == summary.key})
        configs.append({
            "key": summary.key, "model": summary.config.model, "format": summary.config.format,
            "device": "+".join(devices) or summary.config.device or "auto",
            "medians": {figure: stats.median for figure, stats in summary.figures.items()},
            "unstable": list(summary.unstable)})
    return {"created_at": doc.created_at, "slmctl_version": doc.slmctl_version,
            "schema_version": doc.schema_version, "cpu": cpu.get("model"), "configs": configs}


def append_history(home: Path, doc: BenchDocument) -> Path:
    """Append the record of ``doc`` to the history and return the history file's path."""
    path = history_path(home)
    line = json.dumps(history_entry(doc), separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    lock = FileLock(str(path) + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with lock.acquire(timeout=LOCK_TIMEOUT):
            with open(path, "ab") as handle:
                if handle.tell() > 0 and not _ends_with_newline(path):
                    handle.write(b"\n")  # an earlier writer died mid-line: keep the torn line apart
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
    except Timeout as exc:
        raise OperationFailed(f"the benchmark history is busy: waited {LOCK_TIMEOUT:g}s for {lock.lock_file}",
                              hint="another slmctl bench is writing it; retry when it is done") from exc
    except OSError as exc:
        raise OperationFailed(f"cannot write the benchmark history {path}: {exc.strerror or exc}") from exc
    return path


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as reader:
        reader.seek(-1, os.SEEK_END)
        return reader.read(1) == b"\n"


def read_history(home: Path) -> list[dict[str, Any]]:
    """Every readable record, oldest first; damaged lines (torn, not JSON, not an object) are skipped."""
    path = history_path(home)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise OperationFailed(f"cannot read the benchmark history {path}: {exc.strerror or exc}") from exc
    entries = []
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            continue
        if isinstance(entry, dict) and isinstance(entry.get("configs", []), list):
            entries.append(entry)
    return entries


_SHORT = {"gen_tps": "gen", "prompt_tps": "prompt", "ttft_ms": "ttft", "load_ms": "load", "peak_rss": "rss",
          "agg_tps": "agg", "ttft_p95_ms": "ttft95"}


def history_text(entries: Sequence[dict[str, Any]]) -> str:
    """A readable listing of history records, newest last."""
    if not entries:
        return "no benchmark recorded yet\n"
    ordered = sorted(entries, key=lambda e: str(e.get("created_at", "")))
    lines: list[str] = []
    for entry in ordered:
        head = [format_date(str(entry.get("created_at", "?"))), f"slmctl {entry.get('slmctl_version', '?')}"]
        if entry.get("cpu"):
            head.append(str(entry["cpu"]))
        lines.append("   ".join(head))
        for config in entry.get("configs") or []:
            if not isinstance(config, dict):
                continue
            medians = config.get("medians") if isinstance(config.get("medians"), dict) else {}
            unstable = config.get("unstable") if isinstance(config.get("unstable"), list) else []
            figures = []
            for figure in ALL_FIGURES:
                value = medians.get(figure)
                if isinstance(value, (int, float)) and figure in FIGURE_LABELS:
                    mark = "!" if figure in unstable else ""
                    figures.append(f"{_SHORT[figure]} {format_with_unit(figure, float(value))}{mark}")
            lines.append(f"  {config.get('key', '?')}   " + ("   ".join(figures) or "no result"))
    return "\n".join(lines) + "\n"
