"""What a runtime opens: the path of a stored model (:class:`Materializer`, a part of ``ModelStore``).

A single-file GGUF model is opened where its blob lies. An ONNX folder, or a GGUF split in several
files (llama.cpp finds the other parts by name next to the first), becomes a folder of links to the
blobs, ``materialized/<manifest digest hex[:16]>/``, built in ``tmp/`` and renamed into place under the
store lock. Folders are shared by models of the same content and dropped by GC or when a blob they
link to is replaced (a hard-linked or copied folder would still hold the old bytes). A read-only store
uses a complete folder already in ``materialized/`` as it is, and otherwise builds one outside the store
(:func:`private_root`, per user), without the lock: the store is never written.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from slmctl.errors import IntegrityError, OperationFailed
from slmctl.store.blobs import MATERIALIZE_PREFIX
from slmctl.store.fsutil import build_link_tree, delete_tree
from slmctl.store.layout import StoreLayout, os_reason
from slmctl.store.manifest import Manifest


class Materializer(StoreLayout):
    """The ``model_path`` part of :class:`~slmctl.store.store.ModelStore`."""

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
                raise damaged_model(manifest)
            return path
        return self._materialize(manifest)

    def _materialize(self, manifest: Manifest) -> Path:
        target = self.materialized_path(manifest)
        if _is_materialized(target, manifest):
            return target
        if self.read_only:
            return self._materialize_privately(manifest)
        with self.locked():
            if self.get(manifest.ref).digest() != manifest.digest():
                raise OperationFailed(
                    f"the model '{manifest.ref}' changed in the store while it was being opened",
                    hint="run the command again",
                )
            if _is_materialized(target, manifest):
                return target
            return self._build(manifest, target, self.tmp_dir)

    def _materialize_privately(self, manifest: Manifest) -> Path:
        """The folder of links of a read-only store's model, outside the store (nothing locked, nothing written)."""
        root = private_root()
        target = root / self.materialized_path(manifest).name
        if _is_materialized(target, manifest):
            return target
        return self._build(manifest, target, root)

    def _build(self, manifest: Manifest, target: Path, staging: Path) -> Path:
        """Build ``target``, the folder of links to ``manifest``'s blobs, in ``staging`` first."""
        try:
            self.check_blob_sizes(manifest, {})
        except IntegrityError:
            raise damaged_model(manifest) from None
        delete_tree(target)  # an incomplete folder left by an older crash
        entries = [(entry.path, self.blob_path(entry.digest)) for entry in manifest.files]
        try:
            build_link_tree(target, entries, staging, prefix=f"{MATERIALIZE_PREFIX}{os.getpid()}-")
        except OSError as exc:
            raise OperationFailed(f"cannot prepare the model folder of '{manifest.ref}' in {target.parent}: "
                                  f"{os_reason(exc)}") from exc
        return target

    def drop_materialized(self, manifests: Iterable[Manifest], digests: set[str]) -> None:
        """Delete the folders of the ``manifests`` that link to one of ``digests`` (lock held); rebuilt on use."""
        for manifest in manifests:
            if manifest.blob_digests() & digests:
                delete_tree(self.materialized_path(manifest))


def private_root() -> Path:
    """Where a read-only store's model folders are built: ``$TMPDIR/slmctl-materialized-<uid>``."""
    return Path(tempfile.gettempdir()) / f"slmctl-materialized-{os.getuid() if hasattr(os, 'getuid') else 0}"


def _is_materialized(target: Path, manifest: Manifest) -> bool:
    """Whether ``target`` holds every file of the manifest with the right size (links followed)."""
    try:
        return all((target / entry.path).stat().st_size == entry.size for entry in manifest.files)
    except OSError:
        return False


def damaged_model(manifest: Manifest) -> IntegrityError:
    """The error for a model some of whose files are missing from the store."""
    return IntegrityError(
        f"the model '{manifest.ref}' is damaged: some of its files are missing from the store",
        hint="run 'slmctl verify --repair' to fetch them again from the model's source",
    )
