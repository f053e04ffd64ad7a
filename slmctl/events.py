"""Progress events of long operations (pull, and create when it pulls its FROM base), typed.

An operation calls an :data:`OnEvent` handler with each event; drawing them is the caller's business
(:mod:`slmctl.cli.progress` draws bars or plain lines, ``pull --json`` and ``/api/pull`` stream their
wire form). Three kinds:

* :class:`Status`: a step or a notice (``pulling manifest``, ``verifying sha256 digest``, ``writing
  manifest``, ``success``, ``warning: ...``, ``waiting for another pull of ...``);
* :class:`Resolved`: which source and variant a name resolved to;
* :class:`FileProgress`: the bytes of one file so far (``pulling <digest prefix>``).

:meth:`to_wire` gives each one as a line of Ollama's ``/api/pull`` stream (``status``, and for a file
``digest``, ``file``, ``total``, ``completed``). A leaf module: it imports nothing of slmctl, so the
services that emit events and the modules that consume them share these types without importing one
another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Union

SUCCESS = "success"
WARNING_PREFIX = "warning: "


@dataclass(frozen=True)
class Status:
    """A step of the operation, or a notice (a status starting with ``warning: ``)."""

    status: str

    @property
    def is_warning(self) -> bool:
        return self.status.startswith(WARNING_PREFIX)

    @property
    def is_success(self) -> bool:
        return self.status == SUCCESS

    def to_wire(self) -> dict[str, Any]:
        return {"status": self.status}


@dataclass(frozen=True)
class Resolved:
    """The model name, the source it comes from, and the variant (format, quant, source, size) chosen."""

    name: str
    source: str
    variant: dict[str, Any] = field(default_factory=dict)
    status: str = "resolved"

    def to_wire(self) -> dict[str, Any]:
        return {"status": self.status, "name": self.name, "source": self.source, "variant": self.variant}


@dataclass(frozen=True)
class FileProgress:
    """``completed`` of ``total`` bytes of one file (``total`` None while unknown); ``status`` names the
    file's download (``pulling <digest prefix>``), one progress bar each."""

    status: str
    file: str
    completed: int
    total: int | None = None
    digest: str | None = None

    @property
    def finished(self) -> bool:
        return self.total is not None and self.completed >= self.total

    def to_wire(self) -> dict[str, Any]:
        return {"status": self.status, "digest": self.digest, "file": self.file, "total": self.total,
                "completed": self.completed}


#: One progress event.
Event = Union[Status, Resolved, FileProgress]
#: What receives the events of an operation.
OnEvent = Callable[[Event], None]


def wire_handler(emit: Callable[[dict[str, Any]], None]) -> OnEvent:
    """An :data:`OnEvent` that passes each event on in its wire form (an NDJSON stream, ``--json``)."""
    return lambda event: emit(event.to_wire())


__all__ = ["Event", "FileProgress", "OnEvent", "Resolved", "Status", "wire_handler"]
