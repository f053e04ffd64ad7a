"""Content hashing and staging of blobs.

Owns the checks and parts of a ``sha256:<hex>`` digest (computing one is :mod:`slmctl.fileio`'s), the
on-disk blob file name (``sha256-<hex>``) and :class:`HashingWriter`, which streams data into a
temporary file in the store's ``tmp/`` directory while computing its sha256, producing a
:class:`StagedBlob` ready to be committed. Nothing here takes the store lock: staging large files must
never block other processes.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from slmctl.fileio import CHUNK_SIZE, DIGEST_PREFIX, unlink_quietly

STAGE_PREFIX = "stage-"
STAGE_SUFFIX = ".partial"
#: Prefix of the scratch folders ``model_path`` builds ONNX link trees in (``mat-<pid>-...``).
MATERIALIZE_PREFIX = "mat-"
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
#: Finds digests in arbitrary text (used to protect blobs of unreadable manifests from GC).
DIGEST_IN_TEXT_RE = re.compile(r"sha256:[0-9a-f]{64}")


def is_digest(value: str) -> bool:
    """Whether ``value`` is a well-formed ``sha256:<64 lowercase hex>`` digest."""
    return isinstance(value, str) and _DIGEST_RE.match(value) is not None


def digest_hex(digest: str) -> str:
    """The hex part of a ``sha256:<hex>`` digest; raises ``ValueError`` on a malformed digest."""
    if not is_digest(digest):
        raise ValueError(f"invalid digest {digest!r}: expected 'sha256:' followed by 64 lowercase hex digits")
    return digest[len(DIGEST_PREFIX) :]


def blob_name(digest: str) -> str:
    """The file name of a blob in ``blobs/``: ``sha256-<hex>``."""
    return f"sha256-{digest_hex(digest)}"


def digest_from_blob_name(name: str) -> str | None:
    """Inverse of :func:`blob_name`; ``None`` for a name that is not a blob file name."""
    candidate = DIGEST_PREFIX + name.removeprefix("sha256-")
    return candidate if name.startswith("sha256-") and is_digest(candidate) else None


def staging_owner_alive(name: str) -> bool:
    """Whether the process that made a staging entry (``stage-<pid>-...``, ``mat-<pid>-...``) still runs.

    Unknown (no pid in the name, or not POSIX) counts as not alive, so age alone decides.
    """
    prefix, _, rest = name.partition("-")
    pid_text = rest.partition("-")[0]
    if f"{prefix}-" not in (STAGE_PREFIX, MATERIALIZE_PREFIX) or not pid_text.isdigit() or os.name != "posix":
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


@dataclass(frozen=True)
class StagedBlob:
    """A hashed file waiting in ``tmp/`` to be moved into ``blobs/`` by ``ModelStore.commit``."""

    digest: str
    size: int
    tmp_path: Path

    def discard(self) -> None:
        """Delete the staged file (for callers that abandon an import before committing)."""
        unlink_quietly(self.tmp_path)


class HashingWriter:
    """Write a stream into a new temporary file in ``directory`` while computing its sha256.

    Use as a context manager; call :meth:`finish` inside it to flush, fsync and get the
    :class:`StagedBlob`. If the block raises (or ``finish`` is never called) the file is deleted.
    """

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f"{STAGE_PREFIX}{os.getpid()}-", suffix=STAGE_SUFFIX, dir=directory)
        self.path = Path(name)
        self._file: BinaryIO = os.fdopen(fd, "wb")
        self._hasher = hashlib.sha256()
        self._size = 0
        self._finished = False

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._size

    def write(self, data: bytes) -> None:
        """Append ``data`` to the file and the running hash."""
        self._file.write(data)
        self._hasher.update(data)
        self._size += len(data)

    def copy_from(self, stream: BinaryIO, chunk: int = CHUNK_SIZE) -> None:
        """Copy a readable binary stream to the end of the file."""
        while block := stream.read(chunk):
            self.write(block)

    def finish(self) -> StagedBlob:
        """Flush and fsync the file, close it and return the staged blob."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._finished = True
        return StagedBlob(DIGEST_PREFIX + self._hasher.hexdigest(), self._size, self.path)

    def abort(self) -> None:
        """Close and delete the temporary file."""
        self._file.close()
        unlink_quietly(self.path)

    def __enter__(self) -> HashingWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None or not self._finished:
            self.abort()
