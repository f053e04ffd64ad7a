"""Pull progress on stderr, one rendering for every command that downloads (``pull``, ``run``, ``create``).

On a terminal each file gets a rich progress bar (bytes, speed, ETA); elsewhere (pipes, CI logs) the
events become plain lines; with ``--quiet`` nothing is printed. The pull service only emits events
(typed: :mod:`slmctl.events`); drawing them is the CLI's business and happens here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

from slmctl.events import Event, FileProgress, OnEvent, Resolved

__all__ = ["RichProgress", "plain_lines", "plain_progress", "pull_progress"]


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def plain_lines(stream: IO[str]) -> OnEvent:
    """An event handler writing plain progress lines to ``stream`` (flushed at once)."""

    def write(line: str) -> None:
        stream.write(line)
        stream.flush()

    return plain_progress(write)


class RichProgress:
    """One rich progress bar per file (bytes, speed, ETA) on a terminal.

    The display starts with the first event and stops at ``success`` (or when the ``with`` block
    ends), so what a command prints after its pull is not drawn over by a live display.
    """

    def __init__(self, stream: IO[str]) -> None:
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        self.console = Console(file=stream)
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(), console=self.console)
        self.tasks: dict[str, Any] = {}
        self.live = False

    def __enter__(self) -> RichProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def _stop(self) -> None:
        if self.live:
            self.progress.stop()
            self.live = False

    def handle(self, event: Event) -> None:
        if not self.live:
            self.progress.start()
            self.live = True
        if isinstance(event, FileProgress):
            task = self.tasks.get(event.status)
            if task is None:
                task = self.tasks[event.status] = self.progress.add_task(event.status, total=event.total)
            self.progress.update(task, completed=event.completed, total=event.total)
        elif not isinstance(event, Resolved):
            self.progress.console.print(event.status)
            if event.is_success:
                self._stop()


def plain_progress(write: Callable[[str], None], every_s: float = 2.0) -> OnEvent:
    """An event handler printing plain lines: statuses, and each file's progress at most every ``every_s``
    seconds (and once when it is complete)."""
    from slmctl.units import human_size

    last_at, last_status, done = [0.0], [""], set()

    def handle(event: Event) -> None:
        if isinstance(event, Resolved):
            what = " ".join(str(event.variant[k]) for k in ("format", "quant") if event.variant.get(k))
            write(f"resolved {event.name}: {event.source}" + (f" ({what})" if what else "") + "\n")
            return
        if not isinstance(event, FileProgress):
            write(f"{event.status}\n")
            return
        if event.status in done:
            return
        now = time.monotonic()
        if event.finished or event.status != last_status[0] or now - last_at[0] >= every_s:
            last_at[0], last_status[0] = now, event.status
            if event.finished:
                done.add(event.status)
            total = event.total
            size = f"{human_size(event.completed)}/{human_size(total)}" if total else human_size(event.completed)
            percent = f" {100 * event.completed // total}%" if total else ""
            write(f"{event.status} ({event.file}): {size}{percent}\n")

    return handle


@contextmanager
def pull_progress(stream: IO[str], *, quiet: bool = False) -> Iterator[OnEvent | None]:
    """The ``on_event`` handler for a pull reporting on ``stream``: bars, plain lines, or None if quiet."""
    if quiet:
        yield None
    elif _isatty(stream):
        with RichProgress(stream) as bars:
            yield bars.handle
    else:
        yield plain_lines(stream)
