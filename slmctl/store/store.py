"""The shared, content-addressed model store (:class:`ModelStore`): every change to it.

Invariants: staging never holds the lock and writes only to ``tmp/``; everything that changes
``blobs/``, ``manifests/`` or ``materialized/`` runs under the lock; a manifest file appears only
complete (atomic replace) and only after all its blobs exist; blob GC deletes only blobs no manifest
references. So ``list`` never shows a half-imported model and ``remove`` never deletes a blob that an
in-flight import is about to reference. A stored blob is reused only once verified
(:mod:`slmctl.store.integrity`), and Ctrl-C leaves a change either done or not done
(:mod:`slmctl.store.interrupts`). The layout and the reading side are in :mod:`slmctl.store.layout`,
staging in :mod:`slmctl.store.staging`, what a runtime opens in :mod:`slmctl.store.materialize`.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import slmctl.store.fsutil as fsutil
import slmctl.store.integrity as integrity
import slmctl.store.interrupts as interrupts
from slmctl.errors import IntegrityError, OperationFailed, UsageError
from slmctl.fileio import fsync_dir, write_atomic
from slmctl.names import ModelRef
from slmctl.store.blobs import StagedBlob, staging_owner_alive
from slmctl.store.layout import MANIFEST_SUFFIX, ManifestProblem, not_found, os_reason
from slmctl.store.manifest import Manifest
from slmctl.store.materialize import Materializer
from slmctl.store.staging import Staging


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


class ModelStore(Staging, Materializer):
    """Content-addressed store of GGUF and ONNX models shared by all slmctl processes.

    ``root`` is ``$SLMCTL_HOME/models``; directories are created when first needed.
    """

    # ------------------------------------------------------------------ changes (under the lock)

    def commit(self, manifest: Manifest, staged: builtins.list[StagedBlob], *, replace: bool = True,
               on_notice: Callable[[str], None] | None = None) -> Manifest:
        """Move staged blobs into ``blobs/`` and publish ``manifest`` atomically (under the lock).

        Every digest the manifest references must be staged or already stored, with the declared
        size, else ``IntegrityError``. A stored blob is reused only when it is trusted
        (:mod:`slmctl.store.integrity`): one that changed since it was last verified is hashed again
        first, and a damaged one is moved to ``quarantine/`` and replaced by the staged copy
        (``on_notice`` is told where it went); with no staged copy the commit fails (``IntegrityError``).
        ``replace=False`` refuses to give the name of a different model to this one (``UsageError``
        naming both; the same content is fine). Staged files are gone afterwards, whatever happens.
        Replacing an existing ``name:tag`` garbage-collects the blobs only the old manifest used. Ctrl-C
        cancels the commit until the manifest is published and is absorbed after
        (:mod:`slmctl.store.interrupts`).
        """
        try:
            damaged = self.check_stored_blobs(manifest)  # hashing, interruptible, no lock
        except BaseException:
            _discard(staged)
            raise
        with interrupts.commit_section() as section:
            try:
                with self.locked():
                    if not replace:
                        self.check_name(manifest)
                    pending = {blob.digest: blob.tmp_path for blob in staged if blob.tmp_path.is_file()}
                    self.check_blob_sizes(manifest, pending)
                    moved: set[str] = set()
                    try:
                        self._adopt(manifest, pending, damaged, moved, on_notice)
                        section.checkpoint()  # the last moment a Ctrl-C cancels the commit
                        return self._publish(manifest, section)
                    except BaseException:
                        self._collect(moved)
                        raise
            finally:
                _discard(staged)

    def check_stored_blobs(self, manifest: Manifest) -> set[str]:
        """Verify the stored blobs ``manifest`` would reuse (hashing those not trusted); the damaged ones."""
        sizes = {item.digest: item.size for item in [*manifest.files, *manifest.layers]}
        return {digest for digest, size in sizes.items()
                if self.blob_path(digest).exists() and integrity.check_blob(self, digest, size) == "damaged"}

    def check_name(self, manifest: Manifest) -> None:
        """Refuse (``UsageError``) a name that already belongs to a model of different content."""
        path = self.manifest_path(manifest.ref)
        if not path.is_file():
            return
        try:
            existing: Manifest | None = self.read_manifest(path)
        except (OSError, ValueError):
            existing = None
        if existing is not None and existing.same_content(manifest):
            return
        raise name_taken(manifest.ref, existing,
                         f"the new model ({manifest.format}, id {_short(manifest)}, {manifest.source.describe()})")

    def restore_blobs(self, staged: builtins.list[StagedBlob]) -> builtins.list[str]:
        """Put verified copies of blobs that models reference but the store lacks (repair); the restored digests.

        A stored blob that is intact is kept, a damaged one moved to ``quarantine/``; staged files are
        gone afterwards.
        """
        restored: builtins.list[str] = []
        try:
            with interrupts.commit_section(), self.locked():
                scan = self.scan()
                sizes = {item.digest: item.size for m in scan.manifests for item in [*m.files, *m.layers]}
                for blob in staged:
                    if sizes.get(blob.digest) != blob.size or not blob.tmp_path.is_file():
                        continue
                    if self.blob_path(blob.digest).exists():
                        if integrity.check_blob(self, blob.digest, blob.size) == "ok":
                            continue  # repaired meanwhile (an import of the same file)
                        integrity.quarantine(self, blob.digest)
                    integrity.adopt(self, blob.digest, blob.tmp_path)
                    restored.append(blob.digest)
                self.drop_materialized(scan.manifests, set(restored))
        finally:
            _discard(staged)
        return restored

    def copy(self, src: ModelRef, dst: ModelRef) -> Manifest:
        """Make ``dst`` a new name for ``src``'s content (blobs shared, no data copied).

        An existing ``dst`` is replaced; copying a model onto itself is a ``UsageError``.
        """
        if src == dst:
            raise UsageError(f"cannot copy '{src}' onto itself", hint="give the copy another name or tag")
        with interrupts.commit_section() as section, self.locked():
            manifest = self.get(src).renamed(dst)
            self.check_blob_sizes(manifest, {})
            return self._publish(manifest, section)

    def remove(self, ref: ModelRef) -> RemoveResult:
        """Delete a model's manifest, then every blob and materialized folder nothing else uses."""
        with self.locked():
            path = self.manifest_path(ref)
            if not path.is_file():
                raise not_found(ref)
            fsutil.delete_file(path)
            fsync_dir(path.parent)
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
                integrity.forget_stamp(self, digest)
                result.freed_bytes += size
                result.removed_blobs.append(digest)
            keep = {self.materialized_path(manifest).name for manifest in scan.manifests}
            for entry in self._entries(self.materialized_dir):
                if entry.name not in keep:
                    fsutil.delete_tree(entry)
        return result

    def _adopt(self, manifest: Manifest, pending: dict[str, Path], damaged: set[str], moved: set[str],
               on_notice: Callable[[str], None] | None) -> None:
        """Move the staged blobs the manifest needs into ``blobs/`` (lock held), recording new digests in
        ``moved``; a stored blob that is not trusted is checked, and replaced by the staged copy if damaged."""
        replaced: set[str] = set()
        for digest, size in {item.digest: item.size for item in [*manifest.files, *manifest.layers]}.items():
            if self.blob_path(digest).exists():
                if integrity.is_trusted(self, digest, size):
                    continue
                if digest not in damaged and integrity.check_blob(self, digest, size) == "ok":
                    continue  # verified in the meantime (a stamp that could not be written, a race)
                if digest not in pending:
                    raise IntegrityError(
                        f"cannot store '{manifest.ref}': the stored blob {digest} it uses is damaged",
                        hint="run 'slmctl verify --repair' to fetch it again from its source",
                    )
                where = integrity.quarantine(self, digest)
                replaced.add(digest)
                if on_notice is not None and where is not None:
                    on_notice(f"the stored copy of blob {digest} was damaged: moved it to {where}; "
                              "the new copy replaces it")
            if digest in pending:
                integrity.adopt(self, digest, pending[digest])
                moved.add(digest)
        if moved:
            fsync_dir(self.blobs_dir)
        if replaced:
            self.drop_materialized(self.scan().manifests, replaced)

    def _publish(self, manifest: Manifest, section: interrupts.CommitSection) -> Manifest:
        """Write the manifest atomically (lock held): the commit point; GC what a replaced manifest alone used."""
        path = self.manifest_path(manifest.ref)
        self._check_name_free(manifest.ref, path)
        replaced = path.is_file()
        try:
            write_atomic(path, manifest.to_json())
        except OSError as exc:
            raise OperationFailed(f"cannot write the manifest of '{manifest.ref}': {os_reason(exc)}") from exc
        section.committed()
        if replaced:
            self.collect_garbage()
        return manifest

    def _check_name_free(self, ref: ModelRef, path: Path) -> None:
        """Refuse a name whose manifest path collides with another model's (``a:b.json`` vs ``a/b.json/c``)."""
        below_root = [parent for parent in path.parents if self.manifests_dir in parent.parents]
        if path.is_dir() or any(parent.is_file() for parent in below_root):
            raise UsageError(f"the name '{ref}' clashes with another model in the store", hint="choose another name")

    # ------------------------------------------------------------------ reading

    def list_with_problems(self) -> tuple[builtins.list[Manifest], builtins.list[ManifestProblem]]:
        """All readable manifests sorted by name:tag, and the manifest files that were skipped."""
        scan = self.scan()
        return scan.manifests, scan.problems

    def list(self) -> builtins.list[Manifest]:
        """All models sorted by name:tag (reads only ``manifests/``; unreadable files are skipped)."""
        return self.scan().manifests

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


def _discard(staged: builtins.list[StagedBlob]) -> None:
    for blob in staged:
        blob.discard()


def name_taken(ref: ModelRef, existing: Manifest | None, new: str) -> UsageError:
    """The error for a name that belongs to a different model (``existing``; None: an unreadable manifest)."""
    held = ("an unreadable manifest" if existing is None else
            f"another model ({existing.format}, id {_short(existing)}, {existing.source.describe()})")
    return UsageError(
        f"the name '{ref}' is taken by {held}; {new} was not stored",
        hint=f"give the new model another name with --name, or add --force to replace '{ref}'",
    )


def _short(manifest: Manifest) -> str:
    """The 12 hex digits ``list`` shows as a model's ID."""
    return manifest.digest().removeprefix("sha256:")[:12]
