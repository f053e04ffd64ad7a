"""Waiting in tests for something another thread or process does: :func:`wait_for` polls a condition
until it holds, and fails the test, naming what it waited for, when it does not in time."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60, interval: float = 0.02) -> None:
    """Return once ``check()`` is true; fail with "timed out waiting for WHAT" after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval)
