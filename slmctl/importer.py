"""Importing local model files into the store (``slmctl import``).

A ``.gguf`` file is validated (header, metadata, every tensor inside the file) before a single byte
enters the store; it is then copied in while hashed, and its manifest is committed atomically.
"""

from __future__ import annotations

import re
from pathlib import Path

from slmctl.errors import InvalidModelFile, UsageError
from slmctl.formats.gguf_info import GGUFInfo, inspect_gguf
from slmctl.names import ModelRef, parse_model_ref
from slmctl.store import FileEntry, Manifest, ModelDetails, ModelStore, SourceInfo

_NAME_CHARS = re.compile(r"[^a-z0-9._-]+")


def default_name(path: Path) -> str:
    """A model name from a file name: ``Qwen2.5-0.5B-Instruct-Q4_K_M.gguf`` -> ``qwen2.5-0.5b-instruct-q4_k_m``."""
    stem = path.name[: -len(".gguf")] if path.name.lower().endswith(".gguf") else path.name
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
    """Import a ``.gguf`` file as ``name`` (default: from the file name). Returns the new manifest."""
    path = path.expanduser()
    if not path.exists():
        raise UsageError(f"no such file: {path}", "check the path; import takes a .gguf file")
    ref: ModelRef = parse_model_ref(name if name else default_name(path))
    if path.is_dir():
        raise InvalidModelFile(
            f"{path} is a folder, and importing ONNX model folders is not supported by this version",
            "import a .gguf file",
        )
    info = inspect_gguf(path)
    staged = store.stage_file(path)
    try:
        # Validate the copy too: it is what enters the store (the source may change under us).
        if staged.size != info.file_size:
            raise InvalidModelFile(f"{path} changed while it was being imported", "import it again")
        manifest = Manifest(
            name=ref.name,
            tag=ref.tag,
            format="gguf",
            files=[FileEntry(path=_file_name(path), digest=staged.digest, size=staged.size)],
            source=SourceInfo(type="local", ref=str(path.resolve())),
            details=details_from_gguf(info),
        )
    except BaseException:
        staged.discard()
        raise
    return store.commit(manifest, [staged])


def _file_name(path: Path) -> str:
    name = path.name if path.name.lower().endswith(".gguf") else "model.gguf"
    return name.replace("\\", "_")
