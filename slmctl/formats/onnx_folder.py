"""Reading and validating ONNX model folders without loading them.

Two kinds of folder are recognised:

* an ONNX Runtime GenAI decoder: ``genai_config.json`` (naming the decoder file), the ONNX file(s) it
  names (plus their external ``.data``), ``tokenizer.json`` and ``tokenizer_config.json``, and
  optionally ``chat_template.jinja``;
* a sentence-embedding encoder as sentence-transformers exports it: ``model.onnx`` (at the top or in
  ``onnx/``) and ``tokenizer.json``, optionally ``config.json`` and ``1_Pooling/config.json``.

A folder missing a required file, or with an unreadable ``genai_config.json``, raises
:class:`InvalidModelFile` naming what is missing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from slmctl.errors import InvalidModelFile

GENAI_CONFIG = "genai_config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
ENCODER_MODEL_PATHS = ("model.onnx", "onnx/model.onnx")
_MAX_FILES = 2000
_HINT = "an ONNX GenAI folder needs genai_config.json, the model .onnx file(s), tokenizer.json and tokenizer_config.json"


@dataclass(frozen=True)
class OnnxFolderInfo:
    """What slmctl knows about an ONNX model folder."""

    kind: Literal["genai", "encoder"]
    architecture: str | None
    context_length: int | None
    parameter_count: int | None
    quantization: str | None
    chat_template: str | None
    #: Every file of the folder (relative POSIX paths), the ones the runtime needs first.
    files: list[str] = field(default_factory=list)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidModelFile(f"invalid {what} in {path.parent}: {exc}", _HINT) from exc
    if not isinstance(data, dict):
        raise InvalidModelFile(f"invalid {what} in {path.parent}: expected a JSON object", _HINT)
    return data


def list_files(folder: Path) -> list[str]:
    """Regular, non-hidden files below ``folder`` as sorted relative POSIX paths."""
    files = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        files.append(rel.as_posix())
        if len(files) > _MAX_FILES:
            raise InvalidModelFile(f"{folder} holds more than {_MAX_FILES} files", "point at the model folder itself")
    return files


def _require(folder: Path, names: list[str]) -> None:
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise InvalidModelFile(f"the ONNX model folder {folder} lacks {', '.join(missing)}", _HINT)


def _genai_info(folder: Path, files: list[str]) -> OnnxFolderInfo:
    config = _read_json(folder / GENAI_CONFIG, GENAI_CONFIG)
    model = config.get("model")
    decoder = model.get("decoder") if isinstance(model, dict) else None
    if not isinstance(decoder, dict) or not isinstance(decoder.get("filename"), str):
        raise InvalidModelFile(f"invalid {GENAI_CONFIG} in {folder}: model.decoder.filename is missing", _HINT)
    model_type = model.get("type")
    if not isinstance(model_type, str) or not model_type:
        raise InvalidModelFile(f"invalid {GENAI_CONFIG} in {folder}: model.type is missing", _HINT)
    _require(folder, [decoder["filename"], *TOKENIZER_FILES])
    template = read_chat_template(folder)
    context = model.get("context_length")
    params, quantization = _graph_facts(folder / decoder["filename"])
    return OnnxFolderInfo(
        kind="genai",
        architecture=model_type,
        context_length=context if isinstance(context, int) and context > 0 else None,
        parameter_count=params,
        quantization=quantization,
        chat_template=template,
        files=files,
    )


def read_chat_template(folder: Path) -> str | None:
    """The chat template: ``chat_template.jinja`` first, then ``tokenizer_config.json``."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    config = folder / "tokenizer_config.json"
    if config.is_file():
        value = _read_json(config, "tokenizer_config.json").get("chat_template")
        if isinstance(value, str):
            return value
    return None


_DTYPE_NAMES = {1: "FP32", 10: "FP16", 16: "BF16", 3: "INT8", 2: "UINT8"}


def _graph_facts(model_file: Path) -> tuple[int | None, str | None]:
    """Parameter count and weight type of an ONNX graph, from its initializers' headers.

    External data is never read. Weights packed for ``MatMulNBits`` (int4 builds) count
    ``8 / bits`` parameters per byte and make the type ``INT<bits>``.
    """
    try:
        import onnx

        model = onnx.load(str(model_file), load_external_data=False)
    except Exception:  # noqa: BLE001 - these facts are informative only
        return None, None
    packed: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type == "MatMulNBits" and len(node.input) > 1:
            bits = next((a.i for a in node.attribute if a.name == "bits"), 4)
            packed[node.input[1]] = bits
    total, by_type = 0, {}
    for init in model.graph.initializer:
        count = 1
        for dim in init.dims:
            count *= dim
        if init.name in packed:
            count = count * 8 // packed[init.name]
            kind = f"INT{packed[init.name]}"
        else:
            kind = _DTYPE_NAMES.get(init.data_type, "OTHER")
        total += count
        by_type[kind] = by_type.get(kind, 0) + count
    dominant = max(by_type, key=by_type.get) if by_type else None
    return total or None, dominant


def _encoder_info(folder: Path, files: list[str]) -> OnnxFolderInfo:
    model_path = next((p for p in ENCODER_MODEL_PATHS if (folder / p).is_file()), None)
    if model_path is None:
        raise InvalidModelFile(
            f"{folder} is not an ONNX model folder: it has neither {GENAI_CONFIG} nor model.onnx", _HINT)
    _require(folder, ["tokenizer.json"])
    config = _read_json(folder / "config.json", "config.json") if (folder / "config.json").is_file() else {}
    arch = config.get("model_type") if isinstance(config.get("model_type"), str) else None
    context = config.get("max_position_embeddings")
    params, quantization = _graph_facts(folder / model_path)
    return OnnxFolderInfo(
        kind="encoder", architecture=arch, context_length=context if isinstance(context, int) else None,
        parameter_count=params, quantization=quantization, chat_template=None, files=files,
    )


def inspect_onnx_folder(folder: Path) -> OnnxFolderInfo:
    """Validate an ONNX model folder and describe it (never loads the weights)."""
    if not folder.is_dir():
        raise InvalidModelFile(f"not an ONNX model folder: {folder}", _HINT)
    files = list_files(folder)
    if GENAI_CONFIG in files:
        return _genai_info(folder, files)
    return _encoder_info(folder, files)


def is_onnx_folder(folder: Path) -> bool:
    """Cheap check: a folder with a genai_config.json or a model.onnx."""
    return folder.is_dir() and any((folder / p).is_file() for p in (GENAI_CONFIG, *ENCODER_MODEL_PATHS))
