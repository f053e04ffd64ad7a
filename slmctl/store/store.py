"""The shared, content-addressed model store (:class:`ModelStore`): every change to it.

Invariants: staging never holds the lock and writes only to ``tmp/``; everything that changes
``blobs/``, ``manifests/`` or ``materialized/`` runs under the lock; a manifest file appears only
complete (atomic replace) and only after all its blobs exist; blob GC deletes only blobs no manifest
references. So ``list`` never shows a half-imported model and ``remove`` never deletes a blob that an
in-flight import is about to reference. The layout and the reading side are in
:mod:`slmctl.store.layout`.
"""

from __future__ import annotations

import builtins
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from slmctl.errors import IntegrityError, OperationFailed, UsageError
from slmctl.names import ModelRef
from slmctl.store import fsutil
from slmctl.store.blobs import (
    MATERIALIZE_PREFIX,
    STAGE_PREFIX,
    HashingWriter,
    StagedBlob,
    sha256_file,
    staging_owner_alive,
)
from slmctl.store.layout import (
    MANIFEST_SUFFIX,
    ManifestProblem,
    StoreLayout,
    describe_read_error,
    not_found,
    os_reason,
)
from slmctl.store.manifest import Manifest


#: Prefix of the resumable downloads ``slmctl pull`` keeps in ``tmp/``, and how long they are kept.
PULL_PREFIX = "pull-"
PULL_KEEP_S = 7 * 24 * 3600


@dataclass
class GcResult:
    """What a garbage collection deleted."""

    freed_bytes: int = 0
    removed_blobs: list[str] = field(default_factory=list)


@dataclass
class RemoveResult:
    """What ``remove`` deleted: the model's manifest and the blobs nothing else uses."""

    ref: ModelRef
    freed_bytes: int
    removed_blobs: list[str]


class ModelStore(StoreLayout):
    """Content-addressed store of GGUF and ONNX models shared by all slmctl processes.

    ``root`` is ``$SLMCTL_HOME/models``; directories are created when first needed.
    """

    # ------------------------------------------------------------------ staging (no lock)

    def open_staging(self) -> HashingWriter:
        """A writer that streams into a new staging file in ``tmp/`` (for downloads and the like)."""
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

    # ------------------------------------------------------------------ changes (under the lock)

    def commit(self, manifest: Manifest, staged: builtins.list[StagedBlob]) -> Manifest:
        """Move staged blobs into ``blobs/`` and publish ``manifest`` atomically (under the lock).

        Every digest the manifest references must be staged or already stored, with the declared
        size, else ``IntegrityError``. Staged files are gone afterwards, whatever happens. Replacing
        an existing ``name:tag`` garbage-collects the blobs only the old manifest used.
        """
        try:
            with self.locked():
                pending = {blob.digest: blob.tmp_path for blob in staged if blob.tmp_path.is_file()}
                self._verify_blobs(manifest, pending)
                moved: set[str] = set()
                try:
                    self._adopt(pending, manifest.blob_digests(), moved)
                    return self._publish(manifest)
                except BaseException:
                    self._collect(moved)
                    raise
        finally:
            for blob in staged:
                blob.discard()

    def copy(self, src: ModelRef, dst: ModelRef) -> Manifest:
        """Make ``dst`` a new name for ``src``'s content (blobs shared, no data copied).

        An existing ``dst`` is replaced; copying a model onto itself is a ``UsageError``.
        """
        if src == dst:
            raise UsageError(f"cannot copy '{src}' onto itself", hint="give the copy another name or tag")
        with self.locked():
            manifest = self.get(src).renamed(dst)
            self._verify_blobs(manifest, {})
            return self._publish(manifest)

    def remove(self, ref: ModelRef) -> RemoveResult:
        """Delete a model's manifest, then every blob and materialized folder nothing else uses."""
        with self.locked():
            path = self.manifest_path(ref)
            if not path.is_file():
                raise not_found(ref)
            fsutil.delete_file(path)
            fsutil.fsync_dir(path.parent)
            fsutil.prune_empty_dirs(path.parent, self.manifests_dir)
            result = self.collect_garbage()
        return RemoveResult(ref, result.freed_bytes, result.removed_blobs)

    def collect_garbage(self) -> GcResult:
        """Delete every blob and materialized folder no manifest references (under the lock).

        Blobs named in manifest files that fail to parse are kept, in case the file can be repaired.
        """
        return self._collect(None)

    def _collect(self, candidates: set[str] | None) -> GcResult:
        """GC among ``candidates`` (every stored blob when ``None``), plus unused materialized folders."""
        result = GcResult()
        with self.locked():
            scan = self.scan()
            pool = self.stored_digests() if candidates is None else candidates
            for digest in sorted(pool - scan.referenced_digests()):
                path = self.blob_path(digest)
                try:
                    size = path.stat().st_size
                except FileNotFoundError:
                    continue
                fsutil.delete_file(path)
                result.freed_bytes += size
                result.removed_blobs.append(digest)
            keep = {self.materialized_path(manifest).name for manifest in scan.manifests}
            for entry in self._entries(self.materialized_dir):
                if entry.name not in keep:
                    fsutil.delete_tree(entry)
        return result

    def _verify_blobs(self, manifest: Manifest, pending: dict[str, Path]) -> None:
        """Check every referenced blob is stored or pending, with the size the manifest declares."""
        for item in [*manifest.files, *manifest.layers]:
            path = pending.get(item.digest, self.blob_path(item.digest))
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                raise IntegrityError(
                    f"cannot store '{manifest.ref}': blob {item.digest} is missing", hint="import the model again"
                ) from None
            if size != item.size:
                raise IntegrityError(
                    f"cannot store '{manifest.ref}': blob {item.digest} has {size} bytes, the manifest says {item.size}"
                )

    def _adopt(self, pending: dict[str, Path], wanted: set[str], moved: set[str]) -> None:
        """Move the wanted staged files into ``blobs/``, adding the digests that were new to ``moved``."""
        for digest, tmp_path in pending.items():
            target = self.blob_path(digest)
            if digest not in wanted or target.exists():
                continue
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                fsutil.make_read_only(tmp_path)
                os.replace(tmp_path, target)
            except OSError as exc:
                raise OperationFailed(f"cannot move blob {digest} into the model store: {os_reason(exc)}") from exc
            moved.add(digest)
        if moved:
            fsutil.fsync_dir(self.blobs_dir)

    def _publish(self, manifest: Manifest) -> Manifest:
        """Write the manifest atomically (lock held); GC what a replaced manifest alone used."""
        path = self.manifest_path(manifest.ref)
        self._check_name_free(manifest.ref, path)
        replaced = path.is_file()
        try:
            fsutil.write_atomic(path, manifest.to_json())
        except OSError as exc:
            raise OperationFailed(f"cannot write the manifest of '{manifest.ref}': {os_reason(exc)}") from exc
        if replaced:
            self.collect_garbage()
        return manifest

    def _check_name_free(self, ref: ModelRef, path: Path) -> None:
        """Refuse a name whose manifest path collides with another model's (``a:b.json`` vs ``a/b.json/c``)."""
        below_root = [parent for parent in path.parents if self.manifests_dir in parent.parents]
        if path.is_dir() or any(parent.is_file() for parent in below_root):
            raise UsageError(f"the name '{ref}' clashes with another model in the store", hint="choose another name")

    # ------------------------------------------------------------------ reading

    def get(self, ref: ModelRef) -> Manifest:
        """The manifest of ``ref``; ``ModelNotFound`` if absent, ``OperationFailed`` if unreadable."""
        path = self.manifest_path(ref)
        try:
            return self.read_manifest(path)
        except FileNotFoundError:
            raise not_found(ref) from None
        except (OSError, ValueError) as exc:
            raise OperationFailed(
                f"the manifest of '{ref}' is unreadable ({path}): {describe_read_error(exc)}",
                hint=f"remove it with 'slmctl rm {ref}' and import the model again",
            ) from exc

    def exists(self, ref: ModelRef) -> bool:
        """Whether ``ref`` has a manifest."""
        return self.manifest_path(ref).is_file()

    def list_with_problems(self) -> tuple[builtins.list[Manifest], builtins.list[ManifestProblem]]:
        """All readable manifests sorted by name:tag, and the manifest files that were skipped."""
        scan = self.scan()
        return scan.manifests, scan.problems

    def list(self) -> builtins.list[Manifest]:
        """All models sorted by name:tag (reads only ``manifests/``; unreadable files are skipped)."""
        return self.scan().manifests

    # ------------------------------------------------------------------ what a runtime opens

    def model_path(self, manifest: Manifest) -> Path:
        """The primary blob (GGUF, opened directly) or a materialized folder of links (ONNX).

        A GGUF split in several files gets a materialized folder too (llama.cpp finds the other parts
        by name next to the first one); the path of the first part inside it is returned.
        """
        if manifest.format == "gguf" and len(manifest.files) > 1:
            return self._materialize(manifest) / manifest.primary_file.path
        if manifest.format == "gguf":
            path = self.blob_path(manifest.primary_file.digest)
            if not path.is_file():
                raise _damaged(manifest)
            return path
        return self._materialize(manifest)

    def _materialize(self, manifest: Manifest) -> Path:
        target = self.materialized_path(manifest)
        if _is_materialized(target, manifest):
            return target
        with self.locked():
            if self.get(manifest.ref).digest() != manifest.digest():
                raise OperationFailed(
                    f"the model '{manifest.ref}' changed in the store while it was being opened",
                    hint="run the command again",
                )
            if _is_materialized(target, manifest):
                return target
            try:
                self._verify_blobs(manifest, {})
            except IntegrityError:
                raise _damaged(manifest) from None
            fsutil.delete_tree(target)  # an incomplete folder left by an older crash
            entries = [(entry.path, self.blob_path(entry.digest)) for entry in manifest.files]
            try:
                fsutil.build_link_tree(target, entries, self.tmp_dir, prefix=f"{MATERIALIZE_PREFIX}{os.getpid()}-")
            except OSError as exc:
                raise OperationFailed(
                    f"cannot prepare the model folder of '{manifest.ref}': {os_reason(exc)}"
                ) from exc
        return target

    # ------------------------------------------------------------------ maintenance

    def cleanup_tmp(self, max_age_s: float = 3600) -> int:
        """Delete leftovers of crashed imports older than ``max_age_s``; returns how many.

        That is entries of ``tmp/`` whose process is gone, and half-written ``*.tmp`` manifests.
        Resumable downloads of ``slmctl pull`` (``pull-*``) are kept for :data:`PULL_KEEP_S` (7 days).
        """
        leftovers = [entry for entry in self._entries(self.tmp_dir) if not staging_owner_alive(entry.name)]
        max_age_pull = max(max_age_s, PULL_KEEP_S)
        if self.manifests_dir.is_dir():
            leftovers += self.manifests_dir.rglob(f"*{MANIFEST_SUFFIX}.*.tmp")
        removed = 0
        now = time.time()
        for entry in leftovers:
            try:
                age = now - entry.lstat().st_mtime
            except FileNotFoundError:
                continue
            if age >= (max_age_pull if entry.name.startswith(PULL_PREFIX) else max_age_s):
                fsutil.delete_tree(entry)
                removed += 1
        return removed

    @staticmethod
    def _entries(directory: Path) -> builtins.list[Path]:
        return builtins.list(directory.iterdir()) if directory.is_dir() else []


def _is_materialized(target: Path, manifest: Manifest) -> bool:
    """Whether ``target`` holds every file of the manifest with the right size (links followed)."""
    try:
        return all((target / entry.path).stat().st_size == entry.size for entry in manifest.files)
    except OSError:
        return False


def _damaged(manifest: Manifest) -> IntegrityError:
    return IntegrityError(
        f"the model '{manifest.ref}' is damaged: some of its files are missing from the store",
        hint=f"remove it with 'slmctl rm {manifest.ref}' and import it again",
    )
