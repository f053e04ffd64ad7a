"""Importing local model files into the store (``slmctl import``).

A ``.gguf`` file is validated (header, metadata, every tensor inside the file), an ONNX folder is
checked for the files its runtime needs, before a single byte enters the store; the files are then
copied in while hashed, and the manifest is committed atomically (nothing is left on failure). A name
that belongs to a different model is not taken over without ``force``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from slmctl.errors import InvalidModelFile, ModelNotFound, OperationFailed, UsageError
from slmctl.formats.gguf_info import GGUFInfo, format_parameter_count, inspect_gguf
from slmctl.formats.onnx_folder import OnnxFolderInfo, inspect_onnx_folder
from slmctl.names import ModelRef, parse_model_ref
from slmctl.store import FileEntry, Manifest, ModelDetails, ModelFormat, ModelStore, SourceInfo, StagedBlob
from slmctl.store.store import name_taken

_NAME_CHARS = re.compile(r"[^a-z0-9._-]+")


def default_name(path: Path) -> str:
    """A model name from a file name: ``Qwen2.5-0.5B-Instruct-Q4_K_M.gguf`` -> ``qwen2.5-0.5b-instruct-q4_k_m``."""
    base = path.resolve().name
    stem = base[: -len(".gguf")] if base.lower().endswith(".gguf") else base
    cleaned = _NAME_CHARS.sub("-", stem.lower()).strip("-._")
    return cleaned or "model"


def details_from_gguf(info: GGUFInfo) -> ModelDetails:
    return ModelDetails(
        architecture=info.architecture,
        family=info.architecture,
        parameter_count=info.parameter_count,
        parameter_size=info.parameter_size,
        quantization=info.quantization,
        context_length=info.context_length,
    )


@dataclass
class PreparedModel:
    """Model files validated and staged (hashed copies in the store's tmp/), not yet committed."""

    format: ModelFormat
    files: list[FileEntry]
    staged: list[StagedBlob]
    details: ModelDetails
    source: Path

    def discard(self) -> None:
        for blob in self.staged:
            blob.discard()


def prepare_path(store: ModelStore, path: Path) -> PreparedModel:
    """Validate a ``.gguf`` file or an ONNX model folder and stage its files (nothing is committed)."""
    path = path.expanduser()
    if not path.exists():
        raise UsageError(f"no such file or folder: {path}",
                         "import takes a .gguf file or an ONNX GenAI model folder")
    if path.is_dir():
        return _prepare_onnx(store, path)
    info = inspect_gguf(path)
    staged = store.stage_file(path)
    prepared = PreparedModel("gguf", [FileEntry(path=_file_name(path), digest=staged.digest, size=staged.size)],
                             [staged], details_from_gguf(info), path)
    if staged.size != info.file_size:
        prepared.discard()
        raise InvalidModelFile(f"{path} changed while it was being imported", "import it again")
    return prepared


def details_from_onnx(info: OnnxFolderInfo) -> ModelDetails:
    return ModelDetails(
        architecture=info.architecture,
        family="embedding" if info.kind == "encoder" else info.architecture,
        parameter_count=info.parameter_count,
        parameter_size=format_parameter_count(info.parameter_count) if info.parameter_count else None,
        quantization=info.quantization,
        context_length=info.context_length,
    )


def import_path(store: ModelStore, path: Path, name: str | None = None, *, force: bool = False,
                on_notice: Callable[[str], None] | None = None) -> Manifest:
    """Import a ``.gguf`` file or an ONNX model folder as ``name`` (default: from the file name).

    A name that already belongs to a different model is refused (``UsageError``) unless ``force``;
    importing the same content again is always fine (and replaces a damaged stored copy of it:
    ``on_notice`` says where the damaged one went).
    """
    ref: ModelRef = parse_model_ref(name if name else default_name(path.expanduser()))
    if not force:
        _refuse_clear_mismatch(store, ref, path.expanduser())
    prepared = prepare_path(store, path)
    try:
        manifest = new_manifest(ref, prepared)
    except BaseException:
        prepared.discard()
        raise
    return store.commit(manifest, prepared.staged, replace=force, on_notice=on_notice)


def new_manifest(ref: ModelRef, prepared: PreparedModel) -> Manifest:
    """The manifest of a prepared local model stored as ``ref``."""
    return Manifest(name=ref.name, tag=ref.tag, format=prepared.format, files=prepared.files,
                    source=SourceInfo(type="local", ref=str(prepared.source.resolve())), details=prepared.details)


def _refuse_clear_mismatch(store: ModelStore, ref: ModelRef, path: Path) -> None:
    """Refuse at once, before copying anything, a name held by a model that cannot be the file at ``path``.

    (Whether a model of the same format and size is the same is only known once the file is hashed: the
    store decides that at commit.)
    """
    try:
        existing = store.get(ref)
    except (ModelNotFound, OperationFailed):
        return
    if path.is_dir():
        clear = existing.format != "onnx" or bool(existing.layers)
    else:
        try:
            size = path.stat().st_size
        except OSError:
            return
        clear = (existing.format != "gguf" or bool(existing.layers) or len(existing.files) != 1
                 or existing.primary_file.size != size)
    if clear:
        kind = "folder" if path.is_dir() else "file"
        raise name_taken(ref, existing, f"the {kind} {path.resolve()}, a different model,")


def _prepare_onnx(store: ModelStore, folder: Path) -> PreparedModel:
    info = inspect_onnx_folder(folder)
    prepared = PreparedModel("onnx", [], [], ModelDetails(), folder)
    try:
        for rel in info.files:
            blob = store.stage_file(folder / rel)
            prepared.staged.append(blob)
            prepared.files.append(FileEntry(path=rel, digest=blob.digest, size=blob.size))
    except BaseException:
        prepared.discard()
        raise
    prepared.details = details_from_onnx(info)
    return prepared


def _file_name(path: Path) -> str:
    name = path.name if path.name.lower().endswith(".gguf") else "model.gguf"
    return name.replace("\\", "_")
