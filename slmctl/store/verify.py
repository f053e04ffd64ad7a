"""Checking stored models against their manifests (``slmctl verify``).

Every blob a model references (files and Modelfile layers) is re-hashed and compared with the
digest and size its manifest records. Nothing is repaired or deleted and the store lock is not taken
(hashing large models must not block other processes); the verification stamps of the blobs are
refreshed (good) or dropped (damaged), so that an import or pull never trusts a blob found damaged
(:mod:`slmctl.store.integrity`). Repairing is :mod:`slmctl.services.repair`'s job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from slmctl.errors import OperationFailed
from slmctl.names import ModelRef
from slmctl.store.integrity import forget_stamp, rehash
from slmctl.store.manifest import Manifest
from slmctl.store.store import ModelStore

FileStatus = Literal["ok", "missing", "corrupt"]

__all__ = ["FileCheck", "FileStatus", "VerifyResult", "verify_manifest", "verify_models"]


@dataclass(frozen=True)
class FileCheck:
    """One blob of a model: ``kind`` is ``file`` (``name`` its path in the model) or ``layer`` (``name`` its kind)."""

    kind: Literal["file", "layer"]
    name: str
    digest: str
    size: int
    status: FileStatus
    actual_digest: str | None = None
    actual_size: int | None = None
    error: str | None = None

    @property
    def label(self) -> str:
        """``file model.gguf`` / ``layer system``."""
        return f"{self.kind} {self.name}"

    def describe(self) -> str:
        """What is wrong, in one phrase (``file x missing (expected sha256:...)``)."""
        if self.status == "missing":
            return f"{self.label} missing (expected {self.digest})"
        if self.error:
            return f"{self.label} unreadable (expected {self.digest}, got {self.error})"
        got = self.actual_digest if self.actual_digest != self.digest else f"{self.actual_size} bytes"
        expected = self.digest if self.actual_digest != self.digest else f"{self.size} bytes"
        return f"{self.label} (expected {expected}, got {got})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "digest": self.digest,
            "size": self.size,
            "status": self.status,
            "actual_digest": self.actual_digest,
            "actual_size": self.actual_size,
            "error": self.error,
        }


@dataclass
class VerifyResult:
    """The check of one model: one :class:`FileCheck` per blob it references."""

    ref: ModelRef
    digest: str
    files: list[FileCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.status == "ok" for check in self.files)

    @property
    def problems(self) -> list[FileCheck]:
        return [check for check in self.files if check.status != "ok"]

    def summary(self) -> str:
        """``ok`` or ``DAMAGED: file x (expected sha256:..., got sha256:...); ...``."""
        if self.ok:
            return "ok"
        return "DAMAGED: " + "; ".join(check.describe() for check in self.problems)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": str(self.ref),
            "digest": self.digest,
            "status": "ok" if self.ok else "damaged",
            "files": [check.to_dict() for check in self.files],
        }


def verify_manifest(
    store: ModelStore, manifest: Manifest, cache: dict[str, tuple[str, int] | OperationFailed | None] | None = None
) -> VerifyResult:
    """Re-hash every blob ``manifest`` references. ``cache`` (digest -> outcome) lets models share work."""
    cache = {} if cache is None else cache
    result = VerifyResult(manifest.ref, manifest.digest())
    items: list[tuple[Literal["file", "layer"], str, str, int]] = [
        *(("file", entry.path, entry.digest, entry.size) for entry in manifest.files),
        *(("layer", layer.kind, layer.digest, layer.size) for layer in manifest.layers),
    ]
    for kind, name, digest, size in items:
        if digest not in cache:
            try:
                cache[digest] = rehash(store, digest)
            except OperationFailed as exc:
                forget_stamp(store, digest)
                cache[digest] = exc
        outcome = cache[digest]
        if outcome is None:
            result.files.append(FileCheck(kind, name, digest, size, "missing"))
        elif isinstance(outcome, OperationFailed):
            result.files.append(FileCheck(kind, name, digest, size, "corrupt", error=outcome.message))
        else:
            actual_digest, actual_size = outcome
            status: FileStatus = "ok" if (actual_digest, actual_size) == (digest, size) else "corrupt"
            result.files.append(FileCheck(kind, name, digest, size, status, actual_digest, actual_size))
    return result


def verify_models(store: ModelStore, refs: Sequence[ModelRef] | None = None) -> list[VerifyResult]:
    """Check the models ``refs`` (every stored model when empty or ``None``), in order.

    A name that is not in the store raises ``ModelNotFound`` before anything is hashed. Blobs shared
    by several models are hashed once.
    """
    manifests = [store.get(ref) for ref in dict.fromkeys(refs)] if refs else store.list()
    cache: dict[str, tuple[str, int] | OperationFailed | None] = {}
    return [verify_manifest(store, manifest, cache) for manifest in manifests]
