"""``slmctl pull``: download a catalog model or a source reference into the store.

A name is a catalog alias (the variant for this machine is chosen from the usable devices; ``format``,
``quant`` and ``device`` narrow it) or a source reference (``hf.co/...``, ``hf://...``, ``ollama://...``,
``https://...``). Every file is downloaded to a stable path in the store's ``tmp/`` (so a killed pull
resumes), verified, validated as a model, and committed as one manifest. A lock per model name makes
two pulls of one model share the work. It emits typed events (:mod:`slmctl.events`), whose wire form is
Ollama's ``/api/pull`` stream; drawing them is the caller's business.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from slmctl.errors import InvalidModelFile, ModelNotFound, NetworkError, UsageError
from slmctl.events import FileProgress, OnEvent, Resolved, Status
from slmctl.fileio import job_lock, sweep_stale_locks
from slmctl.names import ModelRef, parse_model_ref
from slmctl.refs import HfPathRef, HfRepoRef, OllamaRef, SourceRef, parse_source
from slmctl.settings import Settings
from slmctl.store import FileEntry, Layer, Manifest, ModelDetails, ModelStore, SourceInfo, StagedBlob
from slmctl.store.blobs import STAGE_PREFIX
from slmctl.store.integrity import check_blob
from slmctl.store.layers import LAYER_ORDER, MEDIA_TYPES, encode_params_text, encode_text
from slmctl.store.store import PULL_PREFIX

_CLEAN = str.maketrans({c: "-" for c in " :@+=()[],"})
PROGRESS_EVERY_S = 0.25


@dataclass(frozen=True)
class Plan:
    """What a name resolves to: the local name, the source to fetch, and the catalog variant if any."""

    ref: ModelRef
    source: SourceRef
    variant: dict[str, Any] | None = None
    quant: str | None = None
    format: str | None = None
    revision: str | None = None
    #: From the catalog variant: the files to fetch (default: all) and the sha256 of a single GGUF file.
    files: tuple[str, ...] | None = None
    sha256: str | None = None


def _clean(text: str) -> str:
    cleaned = "-".join(p for p in text.translate(_CLEAN).lower().split("-") if p)
    return cleaned.strip("._-") or "model"


def local_name(source: SourceRef, quant: str | None = None) -> ModelRef:
    """The store name of a source reference: ``hf.co/<owner>/<repo>:<quant|file|latest>`` and the like."""
    if isinstance(source, HfRepoRef):
        return parse_model_ref(f"hf.co/{source.repo_id}:{source.quant or quant or 'latest'}")
    if isinstance(source, HfPathRef):
        tag = "latest"
        if source.path:
            last = source.path.rsplit("/", 1)[-1]
            tag = _clean(last[:-5] if source.is_gguf_file else last)[:128]
        return parse_model_ref(f"hf.co/{source.repo_id}:{tag}")
    if isinstance(source, OllamaRef):
        parts = [_clean(part) for part in source.short.rsplit(":", 1)[0].split("/")][-3:]
        return parse_model_ref("/".join(parts) + f":{source.tag}")
    return parse_model_ref(_clean(source.filename[:-5] if source.filename.lower().endswith(".gguf")
                                  else source.filename))


def plan(store: ModelStore, settings: Settings, name: str, *, format: str | None = None, quant: str | None = None,
         device: str | None = None, insecure: bool = False, sha256: str | None = None) -> Plan:
    """Resolve ``name`` without the network (catalog alias or source reference); ModelNotFound otherwise.

    ``sha256`` (``sha256:<hex>``) is the expected digest of a source reference's single file.
    """
    source = parse_source(name, allow_http=insecure)
    if source is not None:
        return Plan(local_name(source, quant), source, quant=quant, format=format, sha256=sha256)
    from slmctl.catalog import StoredContent, choose_variant, installed_sources, load_catalog
    from slmctl.engine.devices import usable_devices

    catalog = load_catalog(settings.home)
    found = catalog.resolve(name)
    if found is None:
        stored = [m.ref.name if m.ref.tag == "latest" else str(m.ref) for m in store.list()]
        typed = name.strip().lower().removesuffix(":latest")
        close = list(dict.fromkeys(difflib.get_close_matches(typed, stored, n=3, cutoff=0.6)
                                   + catalog.closest(name)))[:4]
        raise ModelNotFound(f"model '{name}' is not in the store nor in the catalog",
                            hint=("did you mean: " + ", ".join(close) + "? " if close else "")
                            + "run 'slmctl list --available' to see the catalog")
    entry, pinned = found
    installed = installed_sources(entry, StoredContent.of(store.list()))
    chosen = choose_variant(entry, usable_gguf=usable_devices("gguf"), usable_onnx=usable_devices("onnx"),
                            format=format, quant=quant, device=device, installed=installed, pinned=pinned)
    variant = chosen.variant
    source = parse_source(variant.source, allow_http=True)
    assert source is not None  # the catalog validates its sources
    public = {**variant.public(), "run_on": chosen.device}
    return Plan(parse_model_ref(name), source, public, variant.quant if variant.format == "gguf" else None,
                variant.format, variant.revision if isinstance(source, (HfPathRef, HfRepoRef)) else None,
                tuple(variant.files) if variant.files else None,
                f"sha256:{variant.sha256}" if variant.sha256 else None)


def pull(store: ModelStore, settings: Settings, name: str, *, env: Mapping[str, str], format: str | None = None,
         quant: str | None = None, device: str | None = None, client_factory: Any = None, insecure: bool = False,
         on_event: OnEvent | None = None, sha256: str | None = None) -> Manifest:
    """Download ``name`` into the store and return its manifest (see the module docstring)."""
    if format is not None and format.strip().lower() not in ("gguf", "onnx"):
        raise UsageError(f"unknown format '{format}'", hint="valid: gguf, onnx")
    emit: OnEvent = on_event or (lambda _event: None)
    p = plan(store, settings, name, format=format, quant=quant, device=device, insecure=insecure, sha256=sha256)
    if settings.offline:
        raise NetworkError(f"offline mode (SLMCTL_OFFLINE=1): cannot download '{name}' from {p.source}",
                           hint="unset SLMCTL_OFFLINE to allow downloads, or import a local file with 'slmctl import'")
    store.tmp_dir.mkdir(parents=True, exist_ok=True)
    sweep_stale_locks(store.tmp_dir, f"{PULL_PREFIX}*.lock")  # left by pulls that were killed
    key = hashlib.sha256(str(p.ref).encode()).hexdigest()[:24]
    with job_lock(store.tmp_dir / f"{PULL_PREFIX}model-{key}.lock",
                  on_wait=lambda: emit(Status(f"waiting for another pull of {p.ref}"))):
        return _pull_locked(store, p, env=env, client_factory=client_factory, insecure=insecure, emit=emit)


def _pull_locked(store: ModelStore, p: Plan, *, env: Mapping[str, str], client_factory: Any, insecure: bool,
                 emit: OnEvent) -> Manifest:
    from slmctl.sources.transports import transport_for

    emit(Status("pulling manifest"))
    transport = transport_for(p.source, env=env, client_factory=client_factory, insecure=insecure,
                              revision=p.revision)
    remote = transport.resolve(p.source, quant=p.quant)
    if p.format and remote.format != p.format.lower():
        raise UsageError(f"'{p.source}' is a {remote.format} model, not {p.format}", hint="drop --format")
    if p.files:
        remote = replace(remote, files=[f for f in remote.files if f.path in p.files])
    if p.sha256 and len(remote.files) == 1 and remote.files[0].sha256 is None:
        remote = replace(remote, files=[replace(remote.files[0], sha256=p.sha256)])
    if not remote.files:
        raise ModelNotFound(f"no model files found at {remote.source}", hint="check the model name or path")
    variant = p.variant or {"format": remote.format, "quant": p.quant, "source": remote.source,
                            "size": remote.total_size}
    emit(Resolved(str(p.ref), remote.source, variant))
    if p.variant is not None and isinstance(p.source, (HfPathRef, HfRepoRef)) and not p.revision:
        emit(Status("warning: the catalog pins no revision for this variant: pulling what 'main' holds today"))
    for note in remote.notes:
        emit(Status(f"warning: {note}"))
    staged: list[StagedBlob] = []
    try:
        files = [fetch_file(store, remote, f, client_factory, emit, staged) for f in remote.files]
        emit(Status("verifying sha256 digest"))
        details = _validate(store, remote.format, files, staged)
        layers = stage_layers(store, remote.layers, staged)
        manifest = Manifest(name=p.ref.name, tag=p.ref.tag, format=remote.format, files=files, layers=layers,
                            source=SourceInfo(type=remote.source_type, ref=remote.source, revision=remote.revision),
                            details=details)
        emit(Status("writing manifest"))
        manifest = store.commit(manifest, staged, on_notice=lambda text: emit(Status(f"warning: {text}")))
    except BaseException:
        for blob in staged:
            blob.discard()
        raise
    emit(Status("success"))
    return manifest


def fetch_file(store: ModelStore, remote: Any, file: Any, client_factory: Any, emit: OnEvent,
               staged: list[StagedBlob]) -> FileEntry:
    """Download one file (or reuse the stored blob) and stage it; returns its manifest entry.

    A stored blob of the published digest is reused only when it is verified (hashed again if it
    changed since it was last verified); a damaged one is downloaded again (the commit replaces it).
    """
    from slmctl.sources.downloader.download import DownloadTarget, download
    from slmctl.sources.downloader.http import DownloadError

    short = file.sha256.split(":", 1)[-1][:12] if file.sha256 else file.path
    status = f"pulling {short}"
    if file.sha256 and file.size is not None:
        if check_blob(store, file.sha256, file.size) == "ok":  # already stored and intact: nothing to download
            emit(FileProgress(status, file.path, file.size, file.size, file.sha256))
            return FileEntry(path=file.path, digest=file.sha256, size=file.size)
    key = (file.sha256 or "").split(":", 1)[-1] or hashlib.sha256(file.url.encode()).hexdigest()
    dest = store.tmp_dir / f"{PULL_PREFIX}{key}"
    last = [0.0]

    def progress(completed: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_S or (total is not None and completed >= total):
            last[0] = now
            emit(FileProgress(status, file.path, completed, total or file.size, file.sha256))

    emit(FileProgress(status, file.path, 0, file.size, file.sha256))
    try:
        digest = download(client_factory, DownloadTarget(file.url, file.size, file.sha256, remote.auth_hint), dest,
                          headers=dict(remote.headers), on_progress=progress)
    except DownloadError as exc:
        if exc.status == 404:
            raise ModelNotFound(exc.message, hint="check the model name or path") from exc
        raise
    target = store.staging_path()
    os.replace(dest, target)
    size = target.stat().st_size
    staged.append(StagedBlob(digest, size, target))  # the downloader hashed and verified it
    emit(FileProgress(status, file.path, size, size, digest))
    return FileEntry(path=file.path, digest=digest, size=size)


def _blob_file(store: ModelStore, digest: str, staged: list[StagedBlob]) -> Path:
    return next((b.tmp_path for b in staged if b.digest == digest), store.blob_path(digest))


def _validate(store: ModelStore, fmt: str, files: list[FileEntry], staged: list[StagedBlob]) -> ModelDetails:
    """Check the downloaded files are a model this tool can run; returns its details."""
    if fmt == "gguf":  # every part of a split model is checked; the first one holds the metadata
        from slmctl.formats.gguf_info import format_parameter_count, inspect_gguf
        from slmctl.services.importer import details_from_gguf

        infos = [inspect_gguf(_blob_file(store, entry.digest, staged)) for entry in files]
        details = details_from_gguf(infos[0])
        if len(infos) > 1:
            count = sum(info.parameter_count for info in infos)
            details = details.model_copy(update={"parameter_count": count,
                                                 "parameter_size": format_parameter_count(count)})
        return details
    from slmctl.formats.onnx_folder import inspect_onnx_folder
    from slmctl.services.importer import details_from_onnx
    from slmctl.store.fsutil import link_file

    folder = store.tmp_dir / f"{STAGE_PREFIX}{os.getpid()}-check-{uuid.uuid4().hex}"
    try:
        for entry in files:
            link_file(_blob_file(store, entry.digest, staged).resolve(), folder / entry.path, folder / entry.path)
        info = inspect_onnx_folder(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    order = {path: i for i, path in enumerate(info.files)}
    files.sort(key=lambda e: order.get(e.path, len(order)))  # the files the runtime needs first
    return details_from_onnx(info)


def stage_layers(store: ModelStore, texts: Mapping[str, list[str]], staged: list[StagedBlob]) -> list[Layer]:
    """Modelfile layers a source ships (Ollama registry), as manifest layers (params re-encoded canonically)."""
    layers = []
    for kind in LAYER_ORDER:
        for text in texts.get(kind, []):
            if kind == "params":
                try:
                    data = encode_params_text(text)
                except ValueError as exc:
                    raise InvalidModelFile(f"the source's parameters are not JSON: {exc}") from exc
            else:
                data = encode_text(text)
            blob = store.stage_bytes(data)
            staged.append(blob)
            layers.append(Layer(kind=kind, digest=blob.digest, size=blob.size, media_type=MEDIA_TYPES[kind]))
    return layers


def ensure_model(store: ModelStore, settings: Settings, name: str, *, env: Mapping[str, str],
                 on_event: OnEvent | None = None, insecure: bool = False, client_factory: Any = None) -> Manifest:
    """The stored model ``name``, pulled first when it is a catalog alias or a source reference (for ``run``)."""
    source = parse_source(name, allow_http=True)  # a stored http source runs without --insecure; pulling needs it
    ref = local_name(source) if source is not None else parse_model_ref(name)
    try:
        return store.get(ref)
    except ModelNotFound:
        pass
    return pull(store, settings, name, env=env, client_factory=client_factory, insecure=insecure,
                on_event=on_event)


__all__ = ["Plan", "ensure_model", "local_name", "plan", "pull"]
