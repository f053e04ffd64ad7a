"""Repairing damaged models (``slmctl verify --repair``): move damaged blobs aside, fetch good copies again.

Given what :mod:`slmctl.store.verify` found, every damaged blob (corrupt or missing) is repaired from the
recorded source of one of the models that use it (a blob shared by several models needs one good copy):

* a corrupt blob is first moved to ``quarantine/`` (never deleted; :attr:`BlobRepair.quarantined` says
  where it went);
* a model imported from a local file or folder (``source.type == "local"``): that file is hashed again
  and used only if it still holds the content the manifest records;
* a model pulled from Hugging Face, an Ollama registry or a URL: the file is downloaded again from the
  recorded source at the recorded revision, checked against the manifest's digest (not the source's);
* a model made by ``create`` has no source of its own: its files are shared with its base, whose
  source is tried like any other; its Modelfile layers can only be made again by ``create``.

Good copies are put in place by :meth:`~slmctl.store.store.ModelStore.restore_blobs` (manifests are not
touched). What could not be repaired comes back with the exact command that repairs it
(:attr:`ModelRepair.advice`); :func:`advice_before_repair` is the hint ``verify`` gives without ``--repair``.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from slmctl.errors import IntegrityError, ModelNotFound, NetworkError, OperationFailed, SlmctlError
from slmctl.events import OnEvent
from slmctl.settings import Settings
from slmctl.store import Manifest, ModelStore, StagedBlob
from slmctl.store.integrity import is_trusted, quarantine
from slmctl.store.interrupts import commit_section
from slmctl.store.verify import FileCheck, VerifyResult

__all__ = ["BlobRepair", "ModelRepair", "RepairReport", "advice_before_repair", "repair_models"]

_REMOTE = ("hf", "ollama", "url")


@dataclass
class BlobRepair:
    """One damaged blob: where its damaged copy went and where the good one came from (or why not)."""

    digest: str
    size: int
    #: Where the corrupt copy was moved (None: it was missing, or a concurrent repair fixed it first).
    quarantined: Path | None = None
    #: The source the good copy came from (``imported from ...`` / ``pulled from ...``); None: not repaired.
    restored_from: str | None = None
    #: Why each source tried could not give it.
    failures: list[str] = field(default_factory=list)


@dataclass
class ModelRepair:
    """One verified model after the repair: its check now, and what to do if it is still damaged."""

    result: VerifyResult
    #: It was damaged and is whole again.
    repaired: bool = False
    #: The command that repairs what is still damaged (None when nothing is).
    advice: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.result.to_dict(), "repaired": self.repaired, "advice": self.advice}


@dataclass
class RepairReport:
    """What :func:`repair_models` did: per damaged blob, and per model (in the order verified)."""

    blobs: list[BlobRepair]
    models: list[ModelRepair]

    @property
    def ok(self) -> bool:
        return all(model.result.ok for model in self.models)

    @property
    def hint(self) -> str:
        """The advice for what is still damaged, once per set of files (one import repairs every model
        sharing them)."""
        covered: set[str] = set()
        parts: list[str] = []
        for model in self.models:
            digests = {check.digest for check in model.result.problems}
            if model.advice is None or not digests or digests <= covered:
                continue
            covered |= digests
            parts.append(model.advice)
        return " | ".join(parts)


def repair_models(store: ModelStore, settings: Settings, results: Sequence[VerifyResult], *,
                  env: Mapping[str, str], on_event: OnEvent | None = None,
                  client_factory: Any = None) -> RepairReport:
    """Repair the damaged blobs of ``results`` (see the module docstring); returns what happened."""
    damaged: dict[str, BlobRepair] = {}
    for result in results:
        for check in result.problems:
            damaged.setdefault(check.digest, BlobRepair(check.digest, check.size))
    corrupt = {check.digest for result in results for check in result.problems if check.status == "corrupt"}
    with commit_section(), store.locked():  # moving aside is one step: Ctrl-C waits for it
        for digest in sorted(corrupt):
            if not is_trusted(store, digest, damaged[digest].size):  # else repaired since it was checked
                damaged[digest].quarantined = quarantine(store, digest)
    manifests = store.list()
    tried: set[tuple[str, str, str | None, frozenset[str]]] = set()
    for manifest in _users(manifests, damaged, results):
        needed = {d for d in manifest.blob_digests() if d in damaged and damaged[d].restored_from is None}
        source = manifest.source
        key = (source.type, source.ref, source.revision, frozenset(needed))
        if not needed or key in tried:
            continue
        tried.add(key)
        where = source.describe()
        try:
            staged = _fetch(store, settings, manifest, needed, env=env, on_event=on_event,
                            client_factory=client_factory)
        except SlmctlError as exc:
            for digest in needed:
                damaged[digest].failures.append(exc.message)
            continue
        restored = set(store.restore_blobs(staged))
        for digest in needed:
            if digest in restored or is_trusted(store, digest, damaged[digest].size):
                damaged[digest].restored_from = where
            else:
                damaged[digest].failures.append(f"{where}: it does not hold blob {digest}")
    fixed = {digest for digest, blob in damaged.items() if blob.restored_from is not None}
    by_ref = {manifest.ref: manifest for manifest in manifests}
    models = []
    for result in results:
        after = _after(result, fixed)
        manifest = by_ref.get(result.ref)
        advice = None if after.ok or manifest is None else _advice(manifest, after, damaged)
        models.append(ModelRepair(after, repaired=not result.ok and after.ok, advice=advice))
    return RepairReport(list(damaged.values()), models)


def advice_before_repair(results: Sequence[VerifyResult], manifests: Sequence[Manifest]) -> str:
    """The hint of ``verify`` for damaged models: ``--repair``, or the exact file to import again."""
    hint = "run 'slmctl verify --repair' to move the damaged files aside and fetch them again from each model's source"
    damaged = {result.ref for result in results if not result.ok}
    local = [m for m in manifests if m.ref in damaged and m.source.type == "local"]
    if local:
        hint += "; or import the file again: " + _import_command(local[0])
    return hint


# ------------------------------------------------------------------------------------------ sources


def _users(manifests: Sequence[Manifest], damaged: Mapping[str, BlobRepair],
           results: Sequence[VerifyResult]) -> list[Manifest]:
    """Every stored model that uses a damaged blob: the verified ones first, then the others."""
    verified = {result.ref for result in results}
    users = [m for m in manifests if m.blob_digests() & set(damaged)]
    return sorted(users, key=lambda m: m.ref not in verified)


def _fetch(store: ModelStore, settings: Settings, manifest: Manifest, needed: set[str], *,
           env: Mapping[str, str], on_event: OnEvent | None, client_factory: Any) -> list[StagedBlob]:
    """Good copies of the blobs ``needed`` from the source ``manifest`` records, staged (not committed)."""
    if manifest.source.type == "local":
        return _from_local(store, manifest, needed)
    if manifest.source.type in _REMOTE:
        if settings.offline:
            raise NetworkError("offline mode (SLMCTL_OFFLINE=1) forbids downloads")
        return _from_remote(store, manifest, needed, env=env, on_event=on_event, client_factory=client_factory)
    raise OperationFailed(f"it has no source to fetch files from ({manifest.source.type})")


def _from_local(store: ModelStore, manifest: Manifest, needed: set[str]) -> list[StagedBlob]:
    """Stage the needed files again from the file or folder the model was imported from, if unchanged."""
    origin = Path(manifest.source.ref)
    single = manifest.format == "gguf" and len(manifest.files) == 1
    staged: list[StagedBlob] = []
    try:
        for entry in manifest.files:
            if entry.digest not in needed or entry.digest in {blob.digest for blob in staged}:
                continue
            path = origin if single else origin / entry.path
            if not path.is_file():
                raise ModelNotFound(f"{path} is not there any more")
            blob = store.stage_file(path)
            staged.append(blob)
            if (blob.digest, blob.size) != (entry.digest, entry.size):
                raise IntegrityError(f"{path} has changed since it was imported (it hashes to {blob.digest})")
    except BaseException:
        for blob in staged:
            blob.discard()
        raise
    return staged


def _from_remote(store: ModelStore, manifest: Manifest, needed: set[str], *, env: Mapping[str, str],
                 on_event: OnEvent | None, client_factory: Any) -> list[StagedBlob]:
    """Download the needed files (and Modelfile layers a registry ships) again, at the recorded revision."""
    from slmctl.refs import HfPathRef, HfRepoRef, parse_source
    from slmctl.services.pull import fetch_file, stage_layers
    from slmctl.sources.transports import transport_for

    source = parse_source(manifest.source.ref, allow_http=True)
    if source is None:
        raise ModelNotFound(f"'{manifest.source.ref}' is not a source reference")
    revision = manifest.source.revision if isinstance(source, HfPathRef | HfRepoRef) else None
    # the recorded source was allowed when the model was pulled; every byte is checked against the manifest
    transport = transport_for(source, env=env, client_factory=client_factory, insecure=True, revision=revision)
    remote = transport.resolve(source)
    emit: OnEvent = on_event or (lambda _event: None)
    wanted = {entry.path: entry for entry in manifest.files if entry.digest in needed}
    staged: list[StagedBlob] = []
    try:
        for file in remote.files:
            entry = wanted.get(file.path)
            if entry is not None:
                fetch_file(store, remote, replace(file, sha256=entry.digest, size=entry.size), client_factory,
                           emit, staged)
        layers = {layer.digest for layer in manifest.layers if layer.digest in needed}
        if layers and remote.layers:
            shipped: list[StagedBlob] = []
            stage_layers(store, remote.layers, shipped)
            for blob in shipped:
                if blob.digest in layers:
                    staged.append(blob)
                else:
                    blob.discard()
    except BaseException:
        for blob in staged:
            blob.discard()
        raise
    return staged


# ------------------------------------------------------------------------------------------ reporting


def _after(result: VerifyResult, fixed: set[str]) -> VerifyResult:
    """``result`` with the checks of the restored blobs marked ok (their copies were verified on the way in)."""
    files = [FileCheck(check.kind, check.name, check.digest, check.size, "ok", check.digest, check.size)
             if check.status != "ok" and check.digest in fixed else check
             for check in result.files]
    return VerifyResult(result.ref, result.digest, files)


def _import_command(manifest: Manifest) -> str:
    return f"slmctl import {shlex.quote(manifest.source.ref)} --name {manifest.ref}"


def _advice(manifest: Manifest, result: VerifyResult, damaged: Mapping[str, BlobRepair]) -> str:
    """Why the files of ``manifest`` that are still damaged could not be repaired, and the command that does."""
    reasons = list(dict.fromkeys(reason for check in result.problems for reason in damaged[check.digest].failures))
    source = manifest.source
    if source.type == "local":
        kind = "folder" if manifest.format == "onnx" else "file"
        todo = f"import the original {kind} again: {_import_command(manifest)}"
    elif source.type in _REMOTE:
        todo = f"run 'slmctl verify --repair {manifest.ref}' again once {source.ref} can be reached"
    else:
        todo = f"make it again: slmctl create {manifest.ref} -f <its Modelfile>"
    return f"{'; '.join(reasons)}: {todo}" if reasons else todo
