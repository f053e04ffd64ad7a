"""Importing local model files into the store (``slmctl import``).

A ``.gguf`` file is validated (header, metadata, every tensor inside the file), an ONNX folder is
checked for the files its runtime needs, before a single byte enters the store; the files are then
copied in while hashed, and the manifest is committed atomically (nothing is left on failure).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from slmctl.errors import InvalidModelFile, UsageError
from slmctl.formats.gguf_info import GGUFInfo, format_parameter_count, inspect_gguf
from slmctl.formats.onnx_folder import OnnxFolderInfo, inspect_onnx_folder
from slmctl.names import ModelRef, parse_model_ref
from slmctl.store import FileEntry, Manifest, ModelDetails, ModelFormat, ModelStore, SourceInfo, StagedBlob

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


def import_path(store: ModelStore, path: Path, name: str | None = None) -> Manifest:
    """Import a ``.gguf`` file or an ONNX model folder as ``name`` (default: from the file name)."""
    ref: ModelRef = parse_model_ref(name if name else default_name(path.expanduser()))
    prepared = prepare_path(store, path)
    try:
        manifest = Manifest(name=ref.name, tag=ref.tag, format=prepared.format, files=prepared.files,
                            source=SourceInfo(type="local", ref=str(prepared.source.resolve())),
                            details=prepared.details)
    except BaseException:
        prepared.discard()
        raise
    return store.commit(manifest, prepared.staged)


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
