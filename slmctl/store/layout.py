"""Where things live in a store root, the store lock, and reading manifests back.

Layout under ``root`` (``$SLMCTL_HOME/models``)::

    blobs/sha256-<hex>              file and layer contents, shared, read-only once written
    manifests/<name parts>/<tag>.json
    tmp/                            staging (same filesystem, so renames are atomic)
    materialized/<digest[:16]>/     ONNX folders made of links to blobs
    verified/sha256-<hex>           when each blob was last verified (see slmctl.store.integrity)
    quarantine/sha256-<hex>.<time>  damaged blobs moved aside, never deleted by slmctl
    .lock                           one lock shared by every process

:class:`StoreLayout` is the read-only half of :class:`~slmctl.store.store.ModelStore`: paths, the
lock, reading one manifest (:meth:`StoreLayout.get`), scanning ``manifests/`` (never ``blobs/``) into
manifests plus the files that failed to parse, and checking that a manifest's blobs are there with
their sizes. Directories are created lazily by the writers.

A store opened with ``read_only=True`` (``slmctl serve --read-only-store``: replicas sharing a volume a pull
Job fills) never takes the lock and refuses every change (:meth:`StoreLayout.check_writable`,
:class:`~slmctl.errors.StoreReadOnly`); reading takes no lock anyway.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock, Timeout
from pydantic import ValidationError

from slmctl.errors import IntegrityError, ModelNotFound, OperationFailed, StoreReadOnly, UsageError
from slmctl.names import ModelRef, parse_model_ref
from slmctl.store.blobs import DIGEST_IN_TEXT_RE, blob_name, digest_from_blob_name, digest_hex
from slmctl.store.manifest import Manifest

MANIFEST_SUFFIX = ".json"


@dataclass(frozen=True)
class ManifestProblem:
    """A manifest file that could not be read; ``list`` skips it."""

    path: Path
    reason: str


@dataclass
class Scan:
    """The outcome of reading every manifest file: the good ones (sorted) and the bad ones."""

    manifests: list[Manifest] = field(default_factory=list)
    problems: list[ManifestProblem] = field(default_factory=list)

    def referenced_digests(self) -> set[str]:
        """Blobs some manifest needs, including digests named in unreadable manifest files."""
        referenced: set[str] = set()
        for manifest in self.manifests:
            referenced |= manifest.blob_digests()
        for problem in self.problems:
            try:
                referenced |= set(DIGEST_IN_TEXT_RE.findall(problem.path.read_text(errors="replace")))
            except OSError:
                continue
        return referenced


def os_reason(exc: OSError) -> str:
    """The human part of an ``OSError`` (``No such file or directory``)."""
    return exc.strerror or str(exc)


def describe_read_error(exc: Exception) -> str:
    """One line saying why a manifest could not be read."""
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "manifest"
        return f"invalid manifest: {where}: {first['msg']}"
    if isinstance(exc, OSError):
        return os_reason(exc)
    return str(exc)


def not_found(ref: ModelRef) -> ModelNotFound:
    """The error for a model that is not in the store."""
    return ModelNotFound(f"model '{ref}' not found", hint="run 'slmctl list' to see the models in the store")


class StoreLayout:
    """Paths, lock and manifest reading for a store rooted at ``root``."""

    def __init__(self, root: Path, *, lock_timeout: float = 600, read_only: bool = False) -> None:
        self.root = Path(root)
        #: Refuse every change and never lock (see the module docstring).
        self.read_only = read_only
        self.blobs_dir = self.root / "blobs"
        self.manifests_dir = self.root / "manifests"
        self.tmp_dir = self.root / "tmp"
        self.materialized_dir = self.root / "materialized"
        self.verified_dir = self.root / "verified"
        self.quarantine_dir = self.root / "quarantine"
        self.lock_path = self.root / ".lock"
        self.lock_timeout = lock_timeout
        self._lock = FileLock(self.lock_path, is_singleton=True)

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

    def check_blob_sizes(self, manifest: Manifest, pending: dict[str, Path]) -> None:
        """Check every referenced blob is pending (staged) or stored, with the size the manifest declares.

        Missing or of another size: ``IntegrityError``. Only sizes: contents are :mod:`slmctl.store.integrity`'s.
        """
        for item in [*manifest.files, *manifest.layers]:
            path = pending.get(item.digest, self.blob_path(item.digest))
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                raise IntegrityError(
                    f"cannot store '{manifest.ref}': blob {item.digest} is missing",
                    hint="import the model again, or run 'slmctl verify --repair'",
                ) from None
            if size != item.size:
                raise IntegrityError(
                    f"cannot store '{manifest.ref}': blob {item.digest} has {size} bytes, the manifest says {item.size}"
                )

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store lock (re-entrant within a process); a timeout raises ``OperationFailed``."""
        self.check_writable()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._lock.acquire(timeout=self.lock_timeout)
        except Timeout as exc:
            raise OperationFailed(
                f"the model store is busy: waited {self.lock_timeout:g}s for its lock",
                hint=f"another slmctl process is using the store (lock file: {self.lock_path}); retry when it is done",
            ) from exc
        except OSError as exc:
            raise OperationFailed(f"cannot lock the model store at {self.root}: {os_reason(exc)}") from exc
        try:
            yield
        finally:
            self._lock.release()

    def check_writable(self, what: str = "change it") -> None:
        """Raise :class:`StoreReadOnly` when the store was opened read-only."""
        if self.read_only:
            raise StoreReadOnly(f"the model store {self.root} is read-only on this server: cannot {what}",
                                "pull, create, copy and delete models where the store is writable (the pull Job)")

    def blob_path(self, digest: str) -> Path:
        """Where the blob ``digest`` lives (whether or not it exists)."""
        return self.blobs_dir / blob_name(digest)

    def manifest_path(self, ref: ModelRef) -> Path:
        """``manifests/<name parts>/<tag>.json``; refuses refs that are not canonical (path safety)."""
        if parse_model_ref(str(ref)) != ref:
            raise UsageError(f"invalid model name '{ref}'", hint="use lower-case [namespace/]name[:tag]")
        return self.manifests_dir.joinpath(*ref.name.split("/"), ref.tag + MANIFEST_SUFFIX)

    def materialized_path(self, manifest: Manifest) -> Path:
        """``materialized/<manifest digest hex[:16]>`` (shared by copies of the same content)."""
        return self.materialized_dir / digest_hex(manifest.digest())[:16]

    def read_manifest(self, path: Path) -> Manifest:
        """Parse a manifest file; ``OSError``/``ValueError`` if unreadable, invalid or misplaced."""
        manifest = Manifest.from_json(path.read_bytes())
        if self.manifest_path(manifest.ref) != path:
            raise ValueError(f"manifest of '{manifest.ref}' found at the wrong place")
        return manifest

    def scan(self) -> Scan:
        """Read every ``manifests/**/*.json`` (never ``blobs/``); results sorted by name:tag."""
        scan = Scan()
        if not self.manifests_dir.is_dir():
            return scan
        for path in sorted(self.manifests_dir.rglob(f"*{MANIFEST_SUFFIX}")):
            if not path.is_file():
                continue
            try:
                scan.manifests.append(self.read_manifest(path))
            except (OSError, ValueError) as exc:
                scan.problems.append(ManifestProblem(path, describe_read_error(exc)))
        scan.manifests.sort(key=lambda m: (m.name, m.tag))
        return scan

    def stored_digests(self) -> set[str]:
        """Digests of the blob files present in ``blobs/`` (walks ``blobs/``: GC only)."""
        if not self.blobs_dir.is_dir():
            return set()
        names = (digest_from_blob_name(entry.name) for entry in self.blobs_dir.iterdir())
        return {digest for digest in names if digest is not None}
