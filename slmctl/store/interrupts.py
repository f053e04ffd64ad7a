"""Ctrl-C and the store's commit point: a change is either done (and reported done) or not done.

The commit point of a change to the store is the atomic rename that publishes a manifest. While a
change runs, :func:`commit_section` holds SIGINT back instead of letting it raise anywhere:

* an interrupt that came *before* the commit point cancels the change: the store calls
  :meth:`CommitSection.checkpoint` just before publishing, which raises ``KeyboardInterrupt`` while the
  store can still roll back (and the rollback itself cannot be cut short by a second Ctrl-C);
* one that comes *after* it is absorbed: the change is done, so the caller sees a normal return.

A command that still reports after its commit (``slmctl import`` printing what it stored) wraps its
body in :func:`hold_after_commit`: from the commit point until the block ends, interrupts stay held, so
a Ctrl-C in that window cannot turn a stored model into exit 130. Before the commit point (while files
are copied and hashed) Ctrl-C works as usual.

Python runs signal handlers in the main thread only: in any other thread (the server's workers) all of
this is a no-op. A process that ignores SIGINT (``nohup``) keeps ignoring it. Leaf module: standard
library only.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

__all__ = ["CommitSection", "Hold", "commit_section", "hold_after_commit"]


@dataclass
class _State:
    """The process-wide bookkeeping (one SIGINT handler per process)."""

    installed: bool = False
    previous: Any = None
    sections: int = 0
    holds: int = 0
    pending: bool = False
    committed: bool = False
    absorbed: bool = False


_state = _State()


def _on_sigint(_signum: int, _frame: FrameType | None) -> None:
    _state.pending = True


def _usable() -> bool:
    """Whether SIGINT can be held here: the main thread, and SIGINT not ignored by the parent."""
    if threading.current_thread() is not threading.main_thread():
        return False
    return _state.installed or signal.getsignal(signal.SIGINT) is not signal.SIG_IGN


def _install() -> None:
    if not _state.installed:
        _state.previous = signal.signal(signal.SIGINT, _on_sigint)
        _state.installed = True
        _state.pending = _state.committed = False


def _uninstall() -> None:
    if _state.installed:
        signal.signal(signal.SIGINT, _state.previous)
        _state.installed = False
        _state.previous = None


class CommitSection:
    """The handle of an open :func:`commit_section`."""

    def __init__(self, active: bool) -> None:
        self._active = active

    def checkpoint(self) -> None:
        """Raise ``KeyboardInterrupt`` if Ctrl-C was pressed and no commit point has passed yet."""
        if self._active and _state.pending and not _state.committed:
            _state.pending = False
            raise KeyboardInterrupt

    def committed(self) -> None:
        """Mark the commit point as passed: from now on an interrupt no longer undoes anything."""
        if self._active:
            _state.committed = True


class Hold:
    """The handle of an open :func:`hold_after_commit`."""

    @property
    def interrupted_late(self) -> bool:
        """Whether Ctrl-C was pressed after the commit point (and so absorbed); read it inside the block."""
        return _state.absorbed or (_state.installed and _state.committed and _state.pending)


@contextmanager
def commit_section() -> Iterator[CommitSection]:
    """Hold SIGINT while a change to the store runs (re-entrant; see the module docstring).

    Leaving the outermost section without an error and without a commit point, with an interrupt held,
    raises ``KeyboardInterrupt`` there (nothing was changed, so the interrupt stands).
    """
    if not _usable():
        yield CommitSection(False)
        return
    _install()
    _state.sections += 1
    failed = False
    try:
        yield CommitSection(True)
    except BaseException:
        failed = True
        raise
    finally:
        _state.sections -= 1
        if _state.sections == 0:
            late = _state.pending and _state.committed
            stands = _state.pending and not _state.committed and not failed
            _state.absorbed = _state.absorbed or late
            if late:
                _state.pending = False
            if not (_state.holds and _state.committed):
                _uninstall()
            if stands:
                _state.pending = False
                raise KeyboardInterrupt


@contextmanager
def hold_after_commit() -> Iterator[Hold]:
    """Keep SIGINT held from the first commit point inside the block until the block ends."""
    hold = Hold()
    if threading.current_thread() is not threading.main_thread():
        yield hold
        return
    _state.holds += 1
    _state.absorbed = False
    try:
        yield hold
    finally:
        _state.holds -= 1
        if _state.holds == 0 and _state.sections == 0:
            _uninstall()
            _state.pending = _state.committed = _state.absorbed = False
