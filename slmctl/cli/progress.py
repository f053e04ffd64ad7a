"""Pull progress on stderr, one rendering for every command that downloads (``pull``, ``run``, ``create``).

On a terminal each file gets a rich progress bar (bytes, speed, ETA); elsewhere (pipes, CI logs) the
events become plain lines; with ``--quiet`` nothing is printed. The pull service only emits events
(:data:`slmctl.pull.OnEvent`); drawing them is the CLI's business and happens here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from slmctl.events import Event, OnEvent
from slmctl.pull import plain_progress

__all__ = ["RichProgress", "plain_lines", "pull_progress"]


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
        status = event.get("status", "")
        if not self.live:
            self.progress.start()
            self.live = True
        if "completed" not in event:
            if status != "resolved":
                self.progress.console.print(status)
            if status == "success":
                self._stop()
            return
        task = self.tasks.get(status)
        if task is None:
            task = self.tasks[status] = self.progress.add_task(status, total=event.get("total"))
        self.progress.update(task, completed=event.get("completed") or 0, total=event.get("total"))


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
