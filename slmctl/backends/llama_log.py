"""Capture of llama.cpp's log lines.

llama-cpp-python reports a refused model file only as "Failed to load model from file"; the real
reason is in llama.cpp's log. This module installs one log callback for the process that keeps the
recent lines in memory (nothing is printed), so a load failure can show its true cause.
"""

from __future__ import annotations

import ctypes
import itertools
import re
import threading
from collections import deque
from typing import Any

_ERROR_LEVEL = 4  # ggml_log_level: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5
_CONT_LEVEL = 5
_lock = threading.Lock()
_lines: deque[tuple[int, int, str]] = deque(maxlen=400)  # (sequence number, level, text)
_counter = itertools.count(1)
_installed: list[Any] = []  # keeps the ctypes callback alive


def install(llama_cpp: Any) -> None:
    """Route llama.cpp's log into the in-memory buffer (idempotent)."""
    if _installed:
        return

    @llama_cpp.llama_log_callback
    def _callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        message = text.decode("utf-8", errors="replace")
        with _lock:
            if level == _CONT_LEVEL and _lines:
                seq, last_level, last = _lines.pop()
                _lines.append((seq, last_level, last + message))
            else:
                _lines.append((next(_counter), level, message))

    llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))
    _installed.append(_callback)


def mark() -> int:
    """A position in the log; pass it to :func:`since` to read what came after."""
    with _lock:
        return _lines[-1][0] if _lines else 0


def since(position: int) -> list[tuple[int, str]]:
    """The (level, text) log entries written after :func:`mark` returned ``position``."""
    with _lock:
        return [(level, text) for seq, level, text in _lines if seq > position and text]


_PREFIXES = re.compile(r"^(?:[A-Za-z_]\w*: |error loading model: )+")
_GENERIC = "failed to load model"


def errors_in(entries: list[tuple[int, str]]) -> list[str]:
    """The distinct error messages among ``entries``, without llama.cpp's function-name prefixes.

    ``llama_model_load: error loading model: unknown model architecture: 'x'`` becomes
    ``unknown model architecture: 'x'``; the generic "failed to load model" lines are dropped.
    """
    reasons: list[str] = []
    for level, text in entries:
        message = _PREFIXES.sub("", text.strip())
        if level == _ERROR_LEVEL and message and message.rstrip(".") != _GENERIC and message not in reasons:
            reasons.append(message)
    return reasons
