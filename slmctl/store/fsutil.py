"""Small filesystem primitives the store is built on (atomic writes and directory fsync, which the
downloader shares, are :mod:`slmctl.fileio`'s).

Owns deletion of read-only files and trees, pruning of empty directories, and building a folder of
links to blobs (symlink, else hard link, else copy). No store layout knowledge lives here.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from slmctl.fileio import fsync_dir


def make_read_only(path: Path) -> None:
    """Drop the write permission bits of a file."""
    mode = stat.S_IMODE(path.stat().st_mode)
    path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def delete_file(path: Path) -> None:
    """Delete a file even if it is read-only (Windows refuses that otherwise); missing is fine."""
    try:
        path.unlink(missing_ok=True)
    except PermissionError:
        path.chmod(stat.S_IWUSR | stat.S_IRUSR)
        path.unlink(missing_ok=True)


def delete_tree(path: Path) -> None:
    """Delete a directory tree without following links; read-only entries are handled."""

    if path.is_symlink() or path.is_file():
        delete_file(path)
    elif path.exists():
        if sys.version_info >= (3, 12):
            shutil.rmtree(path, onexc=_retry_writable)
        else:
            shutil.rmtree(path, onerror=_retry_writable)


def _retry_writable(func: Callable[[str], object], target: str, _error: object) -> None:
    """rmtree error handler: make the entry writable and try once more."""
    os.chmod(target, stat.S_IWUSR | stat.S_IRUSR | stat.S_IXUSR)
    func(target)


def prune_empty_dirs(start: Path, stop: Path) -> None:
    """Remove ``start`` and its parents while they are empty, never removing ``stop`` or above."""
    current = start
    while current != stop and stop in current.parents:
        try:
            current.rmdir()
        except OSError:
            return
        current = current.parent


def link_file(blob: Path, link: Path, final_link: Path) -> None:
    """Make ``link`` point to ``blob``: a relative symlink valid once ``link`` is moved to ``final_link``,
    else a hard link, else a copy."""
    link.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(os.path.relpath(blob, final_link.parent), link)
        return
    except (OSError, NotImplementedError):
        pass
    try:
        os.link(blob, link)
    except OSError:
        shutil.copyfile(blob, link)


def build_link_tree(final_dir: Path, entries: list[tuple[str, Path]], scratch: Path, *, prefix: str) -> None:
    """Create ``final_dir`` holding each ``(relative path, blob)`` as a link, atomically.

    The tree is built in a fresh directory ``<scratch>/<prefix>...`` (same filesystem) and renamed
    into place. If another process renamed its own copy in first, ours is discarded.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=prefix, dir=scratch))
    try:
        for rel, blob in entries:
            link_file(blob, build / rel, final_dir / rel)
        final_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(build, final_dir)
        except OSError:
            if not final_dir.is_dir():
                raise
        fsync_dir(final_dir.parent)
    finally:
        delete_tree(build)
