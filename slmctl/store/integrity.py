"""Which stored blobs can be trusted without re-hashing them, and where damaged ones are moved.

A blob is *trusted* when the store verified it (hashed it, or moved in a copy hashed while it was
written) and it has not changed since: its verification stamp ``verified/sha256-<hex>`` (the blob's
size, mtime and inode, taken before it was hashed) still matches the file. Anything that rewrites,
truncates or replaces a blob changes one of those, so an import or pull that would reuse it hashes it
again (:func:`check_blob`) instead of trusting it. ``slmctl verify`` hashes everything and refreshes
the stamps of good blobs and drops those of damaged ones (damage that left the mtime alone, bit rot,
is then caught by the next import too). A stamp that cannot be written only costs a re-hash later.

Damaged blobs are never deleted: :func:`quarantine` moves one to ``quarantine/`` (a rename: same
filesystem) and returns where it went. Stamps are only read or written here; callers hold the store
lock for :func:`quarantine` and :func:`adopt`.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from slmctl.errors import OperationFailed
from slmctl.fileio import fsync_dir, sha256_file, unlink_quietly, write_atomic
from slmctl.store.blobs import blob_name
from slmctl.store.fsutil import make_read_only
from slmctl.store.layout import StoreLayout, os_reason

#: ``ok``: the blob is stored and matches its digest; ``missing``; ``damaged``: other content or unreadable.
BlobState = Literal["ok", "missing", "damaged"]

__all__ = ["BlobState", "adopt", "check_blob", "forget_stamp", "is_trusted", "quarantine", "rehash", "stamp_now"]


def _stamp_path(layout: StoreLayout, digest: str) -> Path:
    return layout.verified_dir / blob_name(digest)


def _key(st: os.stat_result) -> dict[str, int]:
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}


def _record(layout: StoreLayout, digest: str, st: os.stat_result) -> None:
    try:
        write_atomic(_stamp_path(layout, digest), json.dumps(_key(st)) + "\n")
    except OSError:
        pass  # best effort: without a stamp the blob is hashed again next time


def forget_stamp(layout: StoreLayout, digest: str) -> None:
    """Drop the stamp of ``digest`` (the blob is damaged, or gone)."""
    unlink_quietly(_stamp_path(layout, digest))


def stamp_now(layout: StoreLayout, digest: str) -> None:
    """Stamp the stored blob ``digest`` as it is now: for a blob just moved in from a verified copy."""
    try:
        _record(layout, digest, os.stat(layout.blob_path(digest)))
    except OSError:
        forget_stamp(layout, digest)


def is_trusted(layout: StoreLayout, digest: str, size: int) -> bool:
    """Whether the stored blob has ``size`` bytes and is unchanged since it was last verified (no hashing)."""
    try:
        st = os.stat(layout.blob_path(digest))
        stamp = json.loads(_stamp_path(layout, digest).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return st.st_size == size and stamp == _key(st)


def rehash(layout: StoreLayout, digest: str) -> tuple[str, int] | None:
    """Hash the stored blob ``digest``: ``(actual digest, size)``, None when it is missing.

    The stamp is refreshed when the content matches and the file did not change while it was read,
    dropped when it does not match. An unreadable blob raises ``OperationFailed``.
    """
    path = layout.blob_path(digest)
    try:
        before = os.stat(path)
    except FileNotFoundError:
        forget_stamp(layout, digest)
        return None
    except OSError as exc:
        raise OperationFailed(f"cannot read blob {digest}: {os_reason(exc)}") from exc
    actual, size = sha256_file(path)
    if actual != digest:
        forget_stamp(layout, digest)
    else:
        try:
            unchanged = _key(os.stat(path)) == _key(before)
        except OSError:
            unchanged = False
        if unchanged:
            _record(layout, digest, before)
    return actual, size


def check_blob(layout: StoreLayout, digest: str, size: int) -> BlobState:
    """The state of a stored blob: trusted by its stamp, else hashed again (see the module docstring)."""
    if is_trusted(layout, digest, size):
        return "ok"
    try:
        outcome = rehash(layout, digest)
    except OperationFailed:
        return "damaged"
    if outcome is None:
        return "missing"
    return "ok" if outcome == (digest, size) else "damaged"


def quarantine(layout: StoreLayout, digest: str) -> Path | None:
    """Move the stored blob ``digest`` to ``quarantine/`` (lock held); where it went, None if it was not there."""
    source = layout.blob_path(digest)
    if not source.exists():
        forget_stamp(layout, digest)
        return None
    when = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    layout.quarantine_dir.mkdir(parents=True, exist_ok=True)
    target = layout.quarantine_dir / f"{blob_name(digest)}.{when}"
    number = 1
    while target.exists():
        number += 1
        target = layout.quarantine_dir / f"{blob_name(digest)}.{when}-{number}"
    try:
        os.replace(source, target)
    except OSError as exc:
        raise OperationFailed(
            f"cannot move the damaged blob {digest} aside to {target}: {os_reason(exc)}",
            hint="stop programs using the model (slmctl serve) and try again",
        ) from exc
    forget_stamp(layout, digest)
    fsync_dir(layout.blobs_dir)
    return target


def adopt(layout: StoreLayout, digest: str, tmp_path: Path) -> None:
    """Move a staged, verified file into ``blobs/`` as ``digest`` (lock held) and stamp it."""
    target = layout.blob_path(digest)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        make_read_only(tmp_path)
        os.replace(tmp_path, target)
    except OSError as exc:
        raise OperationFailed(f"cannot move blob {digest} into the model store: {os_reason(exc)}") from exc
    stamp_now(layout, digest)
