"""Progress events of long operations (pull, and create when it pulls its FROM base).

An event is a JSON-ready dict shaped like one line of Ollama's ``/api/pull`` stream (``status``, and for
a download ``digest``, ``file``, ``total``, ``completed``); the operation calls an :data:`OnEvent`
handler with each one, and drawing them is the caller's business (:mod:`slmctl.cli.progress`).

A leaf module: it imports nothing of slmctl, so the services that emit events and the modules that
consume them share these types without importing one another.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: One progress event (Ollama's ``/api/pull`` shape).
Event = dict[str, Any]
#: What receives the events of an operation.
OnEvent = Callable[[Event], None]

__all__ = ["Event", "OnEvent"]
