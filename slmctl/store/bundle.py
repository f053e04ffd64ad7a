"""Bundles: one file that carries models between machines (``slmctl export`` / ``slmctl import``).

A bundle is an uncompressed tar archive (read and written as a stream, never whole in memory)::

    bundle.json                     {"format": "slmctl-bundle", "version": 1, "models": [<manifest>, ...]}
    blobs/sha256-<hex>              every blob the manifests reference, each once

``bundle.json`` always comes first, so an importer knows every expected digest and size before it
reads a single blob. Importing streams each blob into the store's staging area while hashing it and
checks every digest and size against the manifests before anything is committed: a damaged bundle
leaves the store untouched.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, BinaryIO

from slmctl.errors import IntegrityError, InvalidModelFile, OperationFailed, UsageError
from slmctl.fileio import DIGEST_PREFIX
from slmctl.names import ModelRef
from slmctl.store.blobs import StagedBlob, blob_name, digest_from_blob_name
from slmctl.store.interrupts import commit_section
from slmctl.store.layout import os_reason
from slmctl.store.manifest import Manifest
from slmctl.store.store import ModelStore

BUNDLE_FORMAT = "slmctl-bundle"
BUNDLE_VERSION = 1
INDEX_NAME = "bundle.json"
BLOBS_DIR = "blobs"
#: ``bundle.json`` larger than this is not a bundle index (it is read into memory).
MAX_INDEX_SIZE = 64 << 20
_CHUNK = 1 << 20

__all__ = ["BUNDLE_FORMAT", "BUNDLE_VERSION", "export_bundle", "import_bundle", "is_bundle", "read_index"]


# ---------------------------------------------------------------------------------------------- export


def _member(name: str, size: int) -> tarfile.TarInfo:
    """A regular-file entry with fixed metadata (bundles of the same models are byte-identical)."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class _HashingReader:
    """Wraps a blob file for ``tarfile``: hashes what is read so export can check it on the way."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._hasher = hashlib.sha256()
        self.size = 0
        #: Whether a read returned less than asked (the file ended).
        self.ended = False

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        self.ended = self.ended or n < 0 or len(data) < n
        self._hasher.update(data)
        self.size += len(data)
        return data

    @property
    def digest(self) -> str:
        return DIGEST_PREFIX + self._hasher.hexdigest()


def export_bundle(store: ModelStore, refs: Sequence[ModelRef], out: BinaryIO) -> list[Manifest]:
    """Write a bundle holding the models ``refs`` (blobs shared between them written once) to ``out``.

    ``out`` only needs ``write`` (stdout works). The blobs are opened under the store lock, so a
    concurrent ``rm`` cannot pull them away mid-export; they are re-hashed while written and a blob
    that does not match its digest raises ``IntegrityError`` (the output is then incomplete: callers
    write to a temporary file). Returns the exported manifests.
    """
    if not refs:
        raise UsageError("name at least one model to export")
    unique = list(dict.fromkeys(refs))
    handles: dict[str, tuple[IO[bytes], int]] = {}
    try:
        with store.locked():
            manifests = [store.get(ref) for ref in unique]
            for manifest in manifests:
                for item in [*manifest.files, *manifest.layers]:
                    if item.digest not in handles:
                        handles[item.digest] = (_open_blob(store, manifest, item.digest, item.size), item.size)
        index = {
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "models": [manifest.model_dump(mode="json") for manifest in manifests],
        }
        index_bytes = (json.dumps(index, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            tar.addfile(_member(INDEX_NAME, len(index_bytes)), io.BytesIO(index_bytes))
            for digest, (stream, size) in handles.items():
                reader = _HashingReader(stream)
                try:
                    tar.addfile(_member(f"{BLOBS_DIR}/{blob_name(digest)}", size), reader)  # type: ignore[arg-type]
                except OSError:
                    if reader.ended and reader.size < size:  # tarfile: "unexpected end of data"
                        raise _damaged_blob(digest, f"it has fewer than {size} bytes") from None
                    raise
                if reader.digest != digest:
                    raise _damaged_blob(digest, f"its content hashes to {reader.digest}")
    finally:
        for stream, _ in handles.values():
            stream.close()
    return manifests


def _open_blob(store: ModelStore, manifest: Manifest, digest: str, size: int) -> IO[bytes]:
    path = store.blob_path(digest)
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed by export_bundle
    except FileNotFoundError:
        raise _damaged_blob(digest, "it is missing from the store", manifest.ref) from None
    except OSError as exc:
        raise OperationFailed(f"cannot read blob {digest}: {os_reason(exc)}") from exc
    actual = os.fstat(stream.fileno()).st_size
    if actual != size:
        stream.close()
        raise _damaged_blob(digest, f"it has {actual} bytes, the manifest says {size}", manifest.ref)
    return stream


def _damaged_blob(digest: str, why: str, ref: ModelRef | None = None) -> IntegrityError:
    whose = f" of '{ref}'" if ref else ""
    return IntegrityError(
        f"cannot export: blob {digest}{whose} is damaged: {why}",
        hint="run 'slmctl verify' to see which models are affected, then import them again",
    )


# ---------------------------------------------------------------------------------------------- import


def is_bundle(path: Path) -> bool:
    """Whether ``path`` is a file that starts like a bundle: a tar archive whose first entry is ``bundle.json``."""
    try:
        if not path.is_file():
            return False
        with open(path, "rb") as fh, tarfile.open(fileobj=fh, mode="r|") as tar:
            first = tar.next()
            return first is not None and first.isfile() and first.name == INDEX_NAME
    except (OSError, tarfile.TarError, EOFError, ValueError):
        return False


def read_index(tar: tarfile.TarFile, where: str) -> list[Manifest]:
    """Read and validate ``bundle.json`` (the first entry of ``tar``); returns its manifests."""
    first = tar.next()
    if first is None or not first.isfile() or first.name != INDEX_NAME:
        raise _invalid(where, f"its first entry is not {INDEX_NAME}")
    if first.size > MAX_INDEX_SIZE:
        raise _invalid(where, f"{INDEX_NAME} is too large ({first.size} bytes)")
    stream = tar.extractfile(first)
    assert stream is not None
    raw = stream.read()
    if len(raw) != first.size:
        raise _truncated(where)
    try:
        index = json.loads(raw)
    except ValueError as exc:
        raise _invalid(where, f"{INDEX_NAME} is not valid JSON ({exc})") from None
    if not isinstance(index, dict) or index.get("format") != BUNDLE_FORMAT:
        raise _invalid(where, f"{INDEX_NAME} does not describe a {BUNDLE_FORMAT}")
    if index.get("version") != BUNDLE_VERSION:
        raise InvalidModelFile(
            f"{where} is a bundle of version {index.get('version')!r}; this slmctl reads version {BUNDLE_VERSION}",
            hint="import it with a newer slmctl",
        )
    models = index.get("models")
    if not isinstance(models, list) or not models:
        raise _invalid(where, f"{INDEX_NAME} lists no models")
    manifests: list[Manifest] = []
    for number, data in enumerate(models, 1):
        try:
            manifests.append(Manifest.model_validate(data))
        except ValueError as exc:
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise _invalid(where, f"model #{number} in {INDEX_NAME} is invalid: {first_line}") from None
    refs = [manifest.ref for manifest in manifests]
    duplicates = sorted({str(ref) for ref in refs if refs.count(ref) > 1})
    if duplicates:
        raise _invalid(where, f"it holds '{duplicates[0]}' twice")
    sizes: dict[str, int] = {}
    for manifest in manifests:
        for item in [*manifest.files, *manifest.layers]:
            if sizes.setdefault(item.digest, item.size) != item.size:
                raise _invalid(where, f"its manifests disagree on the size of blob {item.digest}")
    return manifests


def import_bundle(store: ModelStore, path: Path, *, name: ModelRef | None = None, force: bool = False,
                  on_notice: Callable[[str], None] | None = None) -> list[Manifest]:
    """Import every model of the bundle at ``path``; returns the stored manifests.

    Each blob is streamed into staging while hashed; every digest and size is checked against the
    manifests before anything is committed (a mismatch is an ``IntegrityError`` naming the blob, a
    truncated or malformed bundle an ``InvalidModelFile``; the store is left unchanged either way).
    ``name`` renames the model of a single-model bundle. A name that belongs to a different model is
    refused (``UsageError``, before anything is stored) unless ``force``; the same content is imported
    again in place (replacing damaged stored copies: ``on_notice`` says where they went). Ctrl-C leaves
    either every model stored or none.
    """
    path = path.expanduser()
    where = f"the bundle {path}"
    staged: dict[str, StagedBlob] = {}
    try:
        try:
            stream = open(path, "rb")  # noqa: SIM115 - closed by the with below
        except OSError as exc:
            raise OperationFailed(f"cannot read '{path}': {os_reason(exc)}") from exc
        with stream:
            try:
                with tarfile.open(fileobj=stream, mode="r|") as tar:
                    manifests = read_index(tar, where)
                    if name is not None:
                        if len(manifests) != 1:
                            raise UsageError(
                                f"--name needs a bundle of one model; {path} holds {len(manifests)}",
                                hint="import it without --name, then copy or rename models with 'slmctl cp'",
                            )
                        manifests = [manifests[0].renamed(name)]
                    expected = {item.digest: item.size for m in manifests for item in [*m.files, *m.layers]}
                    _stage_blobs(store, tar, expected, staged, where)
            except (tarfile.TarError, EOFError) as exc:
                raise _truncated(where, exc) from None
            except OSError as exc:
                raise OperationFailed(f"cannot read '{path}': {os_reason(exc)}") from exc
        missing = sorted(set(expected) - set(staged))
        if missing:
            raise InvalidModelFile(
                f"{where} is incomplete: blob {missing[0]} is missing"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
                hint="the file is probably truncated; copy or export it again",
            )
        return _commit_all(store, manifests, staged, force=force, on_notice=on_notice)
    finally:
        for blob in staged.values():
            blob.discard()


def _stage_blobs(
    store: ModelStore, tar: tarfile.TarFile, expected: dict[str, int], staged: dict[str, StagedBlob], where: str
) -> None:
    """Stream every expected blob of ``tar`` into staging, checking its size and digest."""
    for member in tar:
        if not member.isfile() or not member.name.startswith(f"{BLOBS_DIR}/"):
            continue  # not ours (a later format may add entries): skipped, never extracted
        digest = digest_from_blob_name(member.name[len(BLOBS_DIR) + 1 :])
        if digest is None or digest not in expected or digest in staged:
            continue
        if member.size != expected[digest]:
            raise IntegrityError(
                f"{where} is damaged: blob {digest} has {member.size} bytes, the manifest says {expected[digest]}",
                hint="export the model again on the source machine",
            )
        source = tar.extractfile(member)
        assert source is not None
        try:
            with store.open_staging() as writer:
                while block := source.read(_CHUNK):
                    writer.write(block)
                if writer.size != member.size:
                    raise _truncated(where)
                blob = writer.finish()
        except OSError as exc:
            raise OperationFailed(
                f"cannot copy a blob of {where} into the model store: {os_reason(exc)}",
                hint=f"check free space and permissions under {store.root}",
            ) from exc
        staged[digest] = blob
        if blob.digest != digest:
            raise IntegrityError(
                f"{where} is damaged: blob {digest} does not match its digest (its content hashes to {blob.digest})",
                hint="copy the bundle again, or export the model again on the source machine",
            )


def _commit_all(store: ModelStore, manifests: list[Manifest], staged: dict[str, StagedBlob], *, force: bool,
                on_notice: Callable[[str], None] | None) -> list[Manifest]:
    """Commit the manifests one by one under one hold of the lock (one commit section: all or none
    before the first commit point); each takes the blobs it uses first. Names are checked first."""
    for manifest in manifests:
        store.check_stored_blobs(manifest)  # the hashing of reused blobs stays interruptible
    committed: list[Manifest] = []
    remaining = dict(staged)
    with commit_section(), store.locked():
        if not force:
            for manifest in manifests:
                store.check_name(manifest)
        for manifest in manifests:
            mine = [remaining.pop(digest) for digest in sorted(manifest.blob_digests()) if digest in remaining]
            committed.append(store.commit(manifest, mine, on_notice=on_notice))
    return committed


def _invalid(where: str, why: str) -> InvalidModelFile:
    return InvalidModelFile(f"{where} is not a valid slmctl bundle: {why}",
                            hint="create bundles with 'slmctl export NAME -o FILE'")


def _truncated(where: str, exc: BaseException | None = None) -> InvalidModelFile:
    detail = f" ({exc})" if exc is not None and str(exc) else ""
    return InvalidModelFile(f"{where} is truncated or corrupt{detail}",
                            hint="copy the bundle again, or export the model again on the source machine")
