"""Settings: where slmctl keeps its data and which global switches are on.

Everything comes from an injected environment mapping (``os.environ`` by default) and explicit
overrides from the command line, so a test isolates itself completely by pointing ``SLMCTL_HOME`` at a
temporary directory. Nothing here is global or mutable. This module imports nothing of ours.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_TRUE = {"1", "true", "yes", "on"}


def env_flag(env: Mapping[str, str], name: str) -> bool:
    """True when the environment variable is set to 1/true/yes/on (case-insensitive)."""
    return env.get(name, "").strip().lower() in _TRUE


def default_home() -> Path:
    """The platform's user data directory for slmctl (``~/.local/share/slmctl`` on Linux)."""
    from platformdirs import user_data_dir

    return Path(user_data_dir("slmctl", appauthor=False))


@dataclass(frozen=True)
class Settings:
    """Resolved global settings, passed down explicitly to the services that need them."""

    home: Path
    offline: bool = False
    debug: bool = False

    @property
    def models_dir(self) -> Path:
        """Root of the model store (blobs, manifests)."""
        return self.home / "models"

    @property
    def repl_history_file(self) -> Path:
        """Line history of the interactive ``run`` REPL."""
        return self.home / "repl_history"

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        home: Path | None = None,
        debug: bool = False,
    ) -> Settings:
        """Build settings from ``env`` (default ``os.environ``) and command-line overrides."""
        env = os.environ if env is None else env
        if home is None:
            raw = env.get("SLMCTL_HOME", "").strip()
            home = Path(raw).expanduser() if raw else default_home()
        return cls(
            home=home.absolute(),
            offline=env_flag(env, "SLMCTL_OFFLINE"),
            debug=debug or env_flag(env, "SLMCTL_DEBUG"),
        )
