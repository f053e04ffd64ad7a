"""Importing local model files into the store (``slmctl import``).

A ``.gguf`` file is validated (header, metadata, every tensor inside the file), an ONNX folder is
checked for the files its runtime needs, before a single byte enters the store; the files are then
copied in while hashed, and the manifest is committed atomically (nothing is left on failure).
"""

from __future__ import annotations

import re
from pathlib import Path

from slmctl.errors import InvalidModelFile, UsageError
from slmctl.formats.gguf_info import GGUFInfo, format_parameter_count, inspect_gguf
from slmctl.formats.onnx_folder import inspect_onnx_folder
from slmctl.names import ModelRef, parse_model_ref
from slmctl.store import FileEntry, Manifest, ModelDetails, ModelStore, SourceInfo, StagedBlob

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


def import_path(store: ModelStore, path: Path, name: str | None = None) -> Manifest:
    """Import a ``.gguf`` file or an ONNX model folder as ``name`` (default: from the file name)."""
    path = path.expanduser()
    if not path.exists():
        raise UsageError(f"no such file or folder: {path}",
                         "import takes a .gguf file or an ONNX GenAI model folder")
    ref: ModelRef = parse_model_ref(name if name else default_name(path))
    if path.is_dir():
        return _import_onnx(store, path, ref)
    info = inspect_gguf(path)
    staged = [store.stage_file(path)]
    if staged[0].size != info.file_size:
        _discard(staged)
        raise InvalidModelFile(f"{path} changed while it was being imported", "import it again")
    files = [FileEntry(path=_file_name(path), digest=staged[0].digest, size=staged[0].size)]
    return _commit(store, ref, "gguf", files, staged, path, details_from_gguf(info))


def _import_onnx(store: ModelStore, folder: Path, ref: ModelRef) -> Manifest:
    info = inspect_onnx_folder(folder)
    staged: list[StagedBlob] = []
    try:
        for rel in info.files:
            staged.append(store.stage_file(folder / rel))
    except BaseException:
        _discard(staged)
        raise
    files = [FileEntry(path=rel, digest=s.digest, size=s.size) for rel, s in zip(info.files, staged)]
    details = ModelDetails(
        architecture=info.architecture,
        family="embedding" if info.kind == "encoder" else info.architecture,
        parameter_count=info.parameter_count,
        parameter_size=format_parameter_count(info.parameter_count) if info.parameter_count else None,
        quantization=info.quantization,
        context_length=info.context_length,
    )
    return _commit(store, ref, "onnx", files, staged, folder, details)


def _commit(store: ModelStore, ref: ModelRef, fmt: str, files: list[FileEntry], staged: list[StagedBlob],
            source: Path, details: ModelDetails) -> Manifest:
    try:
        manifest = Manifest(name=ref.name, tag=ref.tag, format=fmt, files=files,
                            source=SourceInfo(type="local", ref=str(source.resolve())), details=details)
    except BaseException:
        _discard(staged)
        raise
    return store.commit(manifest, staged)


def _discard(staged: list[StagedBlob]) -> None:
    for blob in staged:
        blob.discard()


def _file_name(path: Path) -> str:
    name = path.name if path.name.lower().endswith(".gguf") else "model.gguf"
    return name.replace("\\", "_")
