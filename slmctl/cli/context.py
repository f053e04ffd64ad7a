"""The application context handed to every command: settings plus the terminal streams.

The streams and the environment are injected (httpie style), so tests drive the real CLI without
patching anything.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from slmctl.settings import Settings

if TYPE_CHECKING:
    from slmctl.engine import Engine
    from slmctl.store import ModelStore


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@dataclass
class AppContext:
    """What a command needs from its surroundings."""

    settings: Settings
    stdin: IO[str] = field(default_factory=lambda: sys.stdin)
    stdout: IO[str] = field(default_factory=lambda: sys.stdout)
    stderr: IO[str] = field(default_factory=lambda: sys.stderr)

    @classmethod
    def create(cls, *, home: Path | None = None, debug: bool = False) -> AppContext:
        return cls(settings=Settings.from_env(os.environ, home=home, debug=debug))

    @property
    def stdin_is_tty(self) -> bool:
        return _isatty(self.stdin)

    @property
    def stdout_is_tty(self) -> bool:
        return _isatty(self.stdout)

    @property
    def color(self) -> bool:
        return self.stdout_is_tty and "NO_COLOR" not in os.environ

    def store(self) -> ModelStore:
        from slmctl.store import ModelStore

        return ModelStore(self.settings.models_dir)

    def engine(self) -> Engine:
        from slmctl.engine import Engine

        return Engine(self.store(), runtime_here=True)
