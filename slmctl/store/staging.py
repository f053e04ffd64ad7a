"""Staging: files on their way into the store, written and hashed in ``tmp/`` (:class:`Staging`, a part of
``ModelStore``).

Staging never takes the store lock (copying or hashing a large model must not block other processes)
and writes only to ``tmp/``, on the store's filesystem, so a commit moves a staged file into ``blobs/``
with a rename. A :class:`~slmctl.store.blobs.StagedBlob` is deleted by the commit that takes it, or by
its owner when it gives up.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

from slmctl.errors import OperationFailed
from slmctl.fileio import sha256_file
from slmctl.store.blobs import STAGE_PREFIX, HashingWriter, StagedBlob
from slmctl.store.layout import StoreLayout, os_reason


class Staging(StoreLayout):
    """The staging part of :class:`~slmctl.store.store.ModelStore` (no lock)."""

    def open_staging(self) -> HashingWriter:
        """A writer that streams into a new staging file in ``tmp/`` (for downloads and the like)."""
        self.check_writable("add files to it")
        return HashingWriter(self.tmp_dir)

    def stage_file(self, src: Path) -> StagedBlob:
        """Copy ``src`` into ``tmp/`` while hashing it. Does not take the lock."""
        try:
            stream = open(src, "rb")  # noqa: SIM115 - closed by the with below
        except OSError as exc:
            raise OperationFailed(
                f"cannot read '{src}': {os_reason(exc)}", hint="check the path and its permissions"
            ) from exc
        with stream:
            return self._stage(lambda writer: writer.copy_from(stream), f"'{src}'")

    def staging_path(self, suffix: str = "") -> Path:
        """A fresh path in ``tmp/`` for a tool that writes a file itself (see :meth:`stage_written`)."""
        self.check_writable("add files to it")
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        return self.tmp_dir / f"{STAGE_PREFIX}{os.getpid()}-{uuid.uuid4().hex}{suffix}"

    def stage_written(self, path: Path) -> StagedBlob:
        """Stage a file already written at a :meth:`staging_path` (hashed in place, no copy)."""
        if path.parent != self.tmp_dir:
            raise ValueError(f"{path} is not in the staging folder")
        digest, size = sha256_file(path)
        return StagedBlob(digest, size, path)

    def stage_bytes(self, data: bytes) -> StagedBlob:
        """Stage an in-memory blob (a Modelfile layer, for instance). Does not take the lock."""
        return self._stage(lambda writer: writer.write(data), "data")

    def _stage(self, fill: Callable[[HashingWriter], None], what: str) -> StagedBlob:
        try:
            with self.open_staging() as writer:
                fill(writer)
                return writer.finish()
        except OSError as exc:
            raise OperationFailed(
                f"cannot copy {what} into the model store: {os_reason(exc)}",
                hint=f"check free space and permissions under {self.root}",
            ) from exc
