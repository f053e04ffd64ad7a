"""Reading and validating GGUF model files without loading their weights.

This module owns slmctl's view of a GGUF file: :func:`inspect_gguf` walks the header (metadata and
tensor infos) of a memory-mapped file, never touches tensor data, checks that every tensor's bytes
lie inside the file, and turns every malformation into :class:`~slmctl.errors.InvalidModelFile`.

It parses the header itself instead of using ``gguf.GGUFReader``: the reader builds a numpy view per
element of every metadata array (seconds on a 150k-token vocabulary), maps whole tensors, and fails
on broken files with raw ``ValueError``/``IndexError``. The format's tables (value types, block sizes,
file types) still come from the ``gguf`` package, through :mod:`slmctl.formats.gguf_constants` (no numpy).
"""

from __future__ import annotations

import math
import mmap
import os
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from slmctl.errors import InvalidModelFile, OperationFailed
from slmctl.formats.gguf_constants import (
    GGML_QUANT_SIZES,
    GGUF_DEFAULT_ALIGNMENT,
    SCALARS,
    GGMLQuantizationType,
    GGUFValueType,
    LlamaFileType,
)

__all__ = ["ArraySummary", "GGUFInfo", "MetadataValue", "format_parameter_count", "inspect_gguf", "is_gguf_file"]

_MAGIC = b"GGUF"
_VERSIONS = (2, 3)
_MAX_DIMS = 4
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")
_HINT_BROKEN = "the file is damaged or incomplete: download it again"
_HINT_NOT_GGUF = "slmctl runs .gguf model files; convert the model to GGUF or pull a GGUF build of it"


@dataclass(frozen=True)
class ArraySummary:
    """A metadata array, summarized: its item type and length (the items are not kept)."""

    item_type: str
    length: int

    def __str__(self) -> str:
        return f"[{self.length} x {self.item_type}]"


MetadataValue = str | int | float | bool | ArraySummary


@dataclass(frozen=True)
class GGUFInfo:
    """What slmctl knows about a GGUF model without loading it (a later part of a split model has no
    architecture: ``""``, and only its own tensors)."""

    architecture: str
    name: str | None
    parameter_count: int
    #: Ollama-style rounded count: "494.03M", "1.5B", "7.6B".
    parameter_size: str
    #: File type name ("Q4_K_M", "Q8_0", "F16", "F32"), else the dominant tensor type.
    quantization: str
    context_length: int | None
    embedding_length: int | None
    block_count: int | None
    chat_template: str | None
    bos_token_id: int | None
    eos_token_id: int | None
    tensor_count: int
    file_size: int
    version: int
    #: Every metadata key; arrays (the vocabulary, ...) are summarized, not dumped.
    metadata: dict[str, MetadataValue] = field(default_factory=dict, repr=False, compare=False, hash=False)


class _Tensor(NamedTuple):
    name: str
    ggml_type: GGMLQuantizationType
    n_elements: int
    n_bytes: int
    offset: int


def _corrupt(problem: str) -> InvalidModelFile:
    return InvalidModelFile(f"corrupt GGUF file: {problem}", _HINT_BROKEN)


class _Cursor:
    """A bounds-checked little-endian reader over the mapped file."""

    def __init__(self, buf: mmap.mmap, size: int) -> None:
        self.buf, self.size, self.pos = buf, size, 0

    def _advance(self, n: int, what: str) -> int:
        start = self.pos
        if start + n > self.size:
            raise InvalidModelFile(
                f"truncated GGUF file: {what} at offset {start} needs {n} bytes but the file has {self.size} bytes",
                _HINT_BROKEN,
            )
        self.pos = start + n
        return start

    def scalar(self, st: struct.Struct, what: str) -> int | float | bool:
        return st.unpack_from(self.buf, self._advance(st.size, what))[0]  # type: ignore[no-any-return]

    def count(self, what: str) -> int:
        return int(self.scalar(_U64, what))

    def string(self, what: str) -> str:
        n = self.count(what)
        start = self._advance(n, what)
        return self.buf[start : start + n].decode("utf-8", errors="replace")

    def value(self, vtype: int, what: str) -> MetadataValue:
        if vtype == GGUFValueType.STRING:
            return self.string(what)
        if vtype in SCALARS:
            return self.scalar(SCALARS[vtype], what)
        if vtype != GGUFValueType.ARRAY:
            raise _corrupt(f"{what} has unknown value type {vtype}")
        item_type = int(self.scalar(_U32, what))
        length = self.count(what)
        self._skip_items(item_type, length, what)
        return ArraySummary(GGUFValueType(item_type).name.lower(), length)

    def _skip_items(self, item_type: int, length: int, what: str) -> None:
        if item_type in SCALARS:
            self._advance(length * SCALARS[item_type].size, what)
        elif item_type == GGUFValueType.STRING:
            if length * _U64.size > self.size - self.pos:
                self._advance(length * _U64.size, what)  # raises: more strings than the file can hold
            pos, buf, unpack = self.pos, self.buf, _U64.unpack_from
            try:
                for _ in range(length):
                    pos += _U64.size + unpack(buf, pos)[0]
            except (struct.error, OverflowError):  # a length points past the end
                pos = self.size + 1
            self._advance(pos - self.pos, what)
        elif item_type == GGUFValueType.ARRAY:
            for _ in range(length):
                self.value(item_type, what)
        else:
            raise _corrupt(f"{what} is an array of unknown value type {item_type}")


def _read_metadata(cur: _Cursor, kv_count: int) -> dict[str, MetadataValue]:
    metadata: dict[str, MetadataValue] = {}
    for index in range(kv_count):
        key = cur.string(f"metadata entry #{index}")
        what = f"metadata key '{key}'"
        value = cur.value(int(cur.scalar(_U32, what)), what)
        if key in metadata:
            raise _corrupt(f"metadata key '{key}' appears twice")
        metadata[key] = value
    return metadata


def _read_tensor_infos(cur: _Cursor, tensor_count: int) -> list[_Tensor]:
    tensors: list[_Tensor] = []
    names: set[str] = set()
    for index in range(tensor_count):
        name = cur.string(f"tensor info #{index}")
        what = f"tensor info '{name}'"
        n_dims = int(cur.scalar(_U32, what))
        if n_dims > _MAX_DIMS:
            raise _corrupt(f"tensor '{name}' has {n_dims} dimensions (at most {_MAX_DIMS})")
        dims = [cur.count(what) for _ in range(n_dims)]
        raw_type = int(cur.scalar(_U32, what))
        offset = cur.count(what)
        try:
            ggml_type = GGMLQuantizationType(raw_type)
        except ValueError as exc:
            raise _corrupt(f"tensor '{name}' has unknown type id {raw_type}") from exc
        block_size, type_size = GGML_QUANT_SIZES[ggml_type]
        if dims and dims[0] % block_size:
            raise _corrupt(f"tensor '{name}' has {dims[0]} columns, not a multiple of {ggml_type.name} blocks")
        if name in names:
            raise _corrupt(f"tensor '{name}' appears twice")
        names.add(name)
        n_elements = math.prod(dims)
        tensors.append(_Tensor(name, ggml_type, n_elements, n_elements // block_size * type_size, offset))
    return tensors


def _check_tensor_data(tensors: list[_Tensor], data_start: int, alignment: int, file_size: int) -> None:
    for tensor in tensors:
        if tensor.offset % alignment:
            raise _corrupt(f"tensor '{tensor.name}' data offset {tensor.offset} is not {alignment}-byte aligned")
        end = data_start + tensor.offset + tensor.n_bytes
        if end > file_size:
            raise InvalidModelFile(
                f"truncated GGUF file: tensor '{tensor.name}' needs bytes up to {end} "
                f"but the file has {file_size} bytes",
                _HINT_BROKEN,
            )


def _alignment(metadata: dict[str, MetadataValue]) -> int:
    value = metadata.get("general.alignment", GGUF_DEFAULT_ALIGNMENT)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value & (value - 1):
        raise _corrupt(f"'general.alignment' is {value!r}, not a power of two")
    return value


def _quantization(metadata: dict[str, MetadataValue], tensors: list[_Tensor]) -> str:
    file_type = metadata.get("general.file_type")
    known = {t.value for t in LlamaFileType} - {LlamaFileType.GUESSED.value}
    if isinstance(file_type, int) and file_type in known:
        return LlamaFileType(file_type).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    by_type: Counter[str] = Counter()
    for tensor in tensors:
        by_type[tensor.ggml_type.name] += tensor.n_elements
    return by_type.most_common(1)[0][0]


def format_parameter_count(count: int) -> str:
    """Round a parameter count the way Ollama shows it: "494.03M", "1.5B", "7B", "12K"."""
    for scale, suffix, decimals in ((1e9, "B", 1), (1e6, "M", 2), (1e3, "K", 0)):
        if count >= scale:
            number = count / scale
            return f"{number:.0f}{suffix}" if number.is_integer() else f"{number:.{decimals}f}{suffix}"
    return str(count)


def _int(metadata: dict[str, MetadataValue], key: str) -> int | None:
    value = metadata.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(metadata: dict[str, MetadataValue], key: str) -> str | None:
    value = metadata.get(key)
    return value if isinstance(value, str) else None


def _parse(buf: mmap.mmap, size: int) -> GGUFInfo:
    head = buf[:8]
    if head[:4] != _MAGIC:
        hint = _HINT_NOT_GGUF
        if buf[8:10] == b'{"':
            hint = "this looks like a safetensors file: convert it with llama.cpp's convert_hf_to_gguf.py"
        raise InvalidModelFile(f"not a GGUF file: it starts with {head!r}", hint)
    cur = _Cursor(buf, size)
    cur.pos = len(_MAGIC)
    version = int(cur.scalar(_U32, "the GGUF version"))
    if version not in _VERSIONS:
        problem = "a big-endian GGUF file" if version & 0xFFFF == 0 else f"GGUF version {version}"
        raise InvalidModelFile(
            f"unsupported GGUF file: {problem} (slmctl reads little-endian versions 2 and 3)",
            "re-convert the model with a current llama.cpp",
        )
    tensor_count = cur.count("the tensor count")
    kv_count = cur.count("the metadata count")
    if tensor_count * 24 + kv_count * 13 > size - cur.pos:  # the smallest possible entries
        raise InvalidModelFile(
            f"truncated or corrupt GGUF file: the header declares {tensor_count} tensors and {kv_count} "
            f"metadata keys, more than a {size}-byte file can hold",
            _HINT_BROKEN,
        )
    metadata = _read_metadata(cur, kv_count)
    tensors = _read_tensor_infos(cur, tensor_count)
    alignment = _alignment(metadata)
    _check_tensor_data(tensors, -(-cur.pos // alignment) * alignment, alignment, size)
    architecture = _str(metadata, "general.architecture")
    later_split_part = (_int(metadata, "split.no") or 0) > 0  # gguf-split: only the first part has the metadata
    if not architecture and not later_split_part:
        raise InvalidModelFile("invalid GGUF model: the metadata has no 'general.architecture'", _HINT_NOT_GGUF)
    architecture = architecture or ""
    if not tensors:
        raise InvalidModelFile("invalid GGUF model: it has no tensors (a vocabulary-only file?)", _HINT_NOT_GGUF)
    parameter_count = sum(t.n_elements for t in tensors)
    return GGUFInfo(
        architecture=architecture,
        name=_str(metadata, "general.name"),
        parameter_count=parameter_count,
        parameter_size=format_parameter_count(parameter_count),
        quantization=_quantization(metadata, tensors),
        context_length=_int(metadata, f"{architecture}.context_length"),
        embedding_length=_int(metadata, f"{architecture}.embedding_length"),
        block_count=_int(metadata, f"{architecture}.block_count"),
        chat_template=_str(metadata, "tokenizer.chat_template"),
        bos_token_id=_int(metadata, "tokenizer.ggml.bos_token_id"),
        eos_token_id=_int(metadata, "tokenizer.ggml.eos_token_id"),
        tensor_count=tensor_count,
        file_size=size,
        version=version,
        metadata=metadata,
    )


def inspect_gguf(path: str | os.PathLike[str]) -> GGUFInfo:
    """Validate the GGUF file at ``path`` and describe it, reading only its header.

    Raises :class:`OperationFailed` when the file is missing or unreadable and
    :class:`InvalidModelFile` when its content is not a valid, complete GGUF model.
    """
    path = Path(path)
    if path.is_dir():
        raise InvalidModelFile(f"not a GGUF file: {path} is a directory", "pass the path of a .gguf file")
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError as exc:
        raise OperationFailed(f"file not found: {path}") from exc
    except OSError as exc:
        raise OperationFailed(f"cannot read {path}: {exc.strerror or exc}") from exc
    with handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            raise InvalidModelFile(f"empty file: {path} has 0 bytes", _HINT_BROKEN)
        try:
            buf = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            raise OperationFailed(f"cannot map {path} into memory: {exc}") from exc
        with buf:
            try:
                return _parse(buf, size)
            except (struct.error, ValueError, OverflowError, RecursionError, IndexError, KeyError) as exc:
                # A safety net: every known malformation is reported precisely above.
                raise _corrupt(f"cannot parse the header ({type(exc).__name__}: {exc})") from exc


def is_gguf_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a readable file starting with the GGUF magic (a cheap check, no validation)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(_MAGIC)) == _MAGIC
    except OSError:
        return False
