"""The shared, content-addressed model store: manifests, blobs, staging, GC and materialization.

Lower layer: depends only on :mod:`slmctl.errors`, :mod:`slmctl.names`, :mod:`slmctl.fileio`, the
standard library, pydantic and filelock. Import the public API from here; the Modelfile layer
vocabulary (kinds, media types, order, canonical bytes, decoding) is :mod:`slmctl.store.layers`, when a
stored blob can be trusted and where damaged ones go :mod:`slmctl.store.integrity`, Ctrl-C around a
commit :mod:`slmctl.store.interrupts`. Digests of bytes and files, atomic writes and the lock files of
pulls are :mod:`slmctl.fileio`'s (the downloader shares them).
"""

from slmctl.store.blobs import HashingWriter, StagedBlob, blob_name
from slmctl.store.layers import LayerKind
from slmctl.store.layout import ManifestProblem
from slmctl.store.manifest import (
    FileEntry,
    Layer,
    Manifest,
    ModelDetails,
    ModelFormat,
    SourceInfo,
    utc_now,
)
from slmctl.store.store import GcResult, ModelStore, RemoveResult

__all__ = [
    "FileEntry",
    "GcResult",
    "HashingWriter",
    "Layer",
    "LayerKind",
    "Manifest",
    "ManifestProblem",
    "ModelDetails",
    "ModelFormat",
    "ModelStore",
    "RemoveResult",
    "SourceInfo",
    "StagedBlob",
    "blob_name",
    "utc_now",
]
