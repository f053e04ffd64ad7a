"""The application context handed to every command: settings plus the terminal streams, and the
lookup of a stored model by name with a did-you-mean when it is not there (``show``, ``rm``, ``cp``,
``bench``, ``embed``; ``run`` and ``FROM`` get theirs from the pull service, which also knows the catalog).

The streams and the environment are injected (httpie style): :func:`slmctl.cli.app.main` builds the
context from ``os.environ`` and the ``sys`` streams, or takes one given (tests drive the real CLI in
process with their own streams and environment); nothing below it reaches for ``os.environ`` or ``sys``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING

from slmctl.settings import Settings

if TYPE_CHECKING:
    from slmctl.engine import Engine
    from slmctl.errors import ModelNotFound
    from slmctl.store import Manifest, ModelStore


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@dataclass
class AppContext:
    """What a command needs from its surroundings."""

    settings: Settings
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    stdin: IO[str] = field(default_factory=lambda: sys.stdin)
    stdout: IO[str] = field(default_factory=lambda: sys.stdout)
    stderr: IO[str] = field(default_factory=lambda: sys.stderr)

    @classmethod
    def create(cls, *, home: Path | None = None, debug: bool = False, env: Mapping[str, str] | None = None,
               stdin: IO[str] | None = None, stdout: IO[str] | None = None,
               stderr: IO[str] | None = None) -> AppContext:
        """A context for ``env`` (default: this process's) and the given streams (default: ``sys``'s)."""
        env = dict(os.environ) if env is None else env
        return cls(settings=Settings.from_env(env, home=home, debug=debug), env=env,
                   stdin=stdin or sys.stdin, stdout=stdout or sys.stdout, stderr=stderr or sys.stderr)

    def with_options(self, *, home: Path | None, debug: bool) -> AppContext:
        """This context with the global options (``--home``, ``--debug``) applied to its settings."""
        return replace(self, settings=Settings.from_env(self.env, home=home, debug=debug))

    @property
    def debug(self) -> bool:
        """``--debug`` or ``SLMCTL_DEBUG``: tracebacks and runtime logs on errors."""
        return self.settings.debug

    @property
    def binary_stdout(self) -> IO[bytes]:
        """The byte stream under :attr:`stdout` (``export -o -``)."""
        self.stdout.flush()
        return self.stdout.buffer  # type: ignore[attr-defined, no-any-return]

    @property
    def stdin_is_tty(self) -> bool:
        return _isatty(self.stdin)

    @property
    def stdout_is_tty(self) -> bool:
        return _isatty(self.stdout)

    @property
    def color(self) -> bool:
        return self.stdout_is_tty and "NO_COLOR" not in self.env

    def store(self) -> ModelStore:
        from slmctl.store import ModelStore

        return ModelStore(self.settings.models_dir)

    def engine(self) -> Engine:
        from slmctl.engine import Engine

        return Engine(self.store(), runtime_here=True)

    def manifest(self, engine: Engine, name: str) -> Manifest:
        """The stored model ``name``; :class:`ModelNotFound` says which stored names look like it."""
        from slmctl.errors import ModelNotFound

        try:
            return engine.manifest(name)
        except ModelNotFound as error:
            self.with_suggestions(error, [name], engine.store)
            raise

    def with_suggestions(self, error: ModelNotFound, names: list[str], store: ModelStore) -> ModelNotFound:
        """``error`` with a hint naming the stored models closest to ``names`` (and the catalog's, to pull)."""
        import difflib

        try:
            stored = [m.ref.name if m.ref.tag == "latest" else str(m.ref) for m in store.list()]
        except Exception:  # noqa: BLE001 - a suggestion must never hide the error itself
            stored = []
        close: list[str] = []
        for name in names:
            typed = name.strip().lower().removesuffix(":latest")
            found = difflib.get_close_matches(typed, stored, n=3, cutoff=0.6)
            found += [c for c in stored if _typo_distance(typed, c.lower()) <= (1 if len(typed) <= 3 else 2)]
            close += [c for c in dict.fromkeys(found) if c not in close]
        pullable = [name for name in names if self._in_catalog(name)]
        hint = ""
        if close:
            hint += "did you mean " + (f"'{close[0]}'" if len(close) == 1
                                       else "one of " + ", ".join(f"'{c}'" for c in close[:3])) + "? "
        if pullable:
            hint += f"'{pullable[0]}' is in the catalog: 'slmctl pull {pullable[0]}' downloads it; "
        error.hint = hint + (error.hint or "run 'slmctl list' to see the models in the store")
        return error

    def _in_catalog(self, name: str) -> bool:
        try:
            from slmctl.catalog import load_catalog

            return load_catalog(self.settings.home).resolve(name) is not None
        except Exception:  # noqa: BLE001 - a broken user catalog only costs the suggestion
            return False


def _typo_distance(a: str, b: str) -> int:
    """Edits (insert, delete, replace, swap two neighbours) from ``a`` to ``b``: difflib misses 'tyni'/'tiny'."""
    if abs(len(a) - len(b)) > 2:
        return 3
    previous, row = None, list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            current[j] = min(row[j] + 1, current[j - 1] + 1, row[j - 1] + (ca != cb))
            if previous is not None and i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], previous[j - 2] + 1)
        previous, row = row, current
    return row[-1]
