"""The manifest schema: what a model in the store is made of.

A :class:`Manifest` names a model (``name:tag``), lists its files and Modelfile layers by digest
(each one a blob in ``blobs/``), and records where it came from and what it is. Its
:meth:`Manifest.digest` identifies the content only (not the name, tag or creation time), so copies
and re-creations of the same model share it. Pure data: no I/O.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from slmctl.errors import UsageError
from slmctl.fileio import DIGEST_PREFIX
from slmctl.names import ModelRef, parse_model_ref
from slmctl.store.blobs import digest_hex
from slmctl.store.layers import LayerKind

SCHEMA_VERSION = 1
ModelFormat = Literal["gguf", "onnx"]
#: Fields that name a model rather than describe its content; left out of :meth:`Manifest.digest`.
_IDENTITY_FIELDS = frozenset({"name", "tag", "created_at"})


def utc_now() -> datetime:
    """The current time, tz-aware UTC."""
    return datetime.now(timezone.utc)


def _check_digest(value: str) -> str:
    digest_hex(value)  # raises ValueError with a clear message
    return value


def check_relative_path(value: str) -> str:
    """Validate a relative POSIX path inside a model (no absolute, ``..``, ``.``, backslash, empty part)."""
    if not value:
        raise ValueError("file path is empty")
    if "\\" in value or any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise ValueError(f"file path {value!r} contains a backslash or a control character")
    if value.startswith("/") or (len(value) > 1 and value[1] == ":"):
        raise ValueError(f"file path {value!r} is absolute")
    if any(part in ("", ".", "..") for part in value.split("/")):
        raise ValueError(f"file path {value!r} has an empty, '.' or '..' part")
    return value


Digest = Annotated[str, AfterValidator(_check_digest)]
RelativePath = Annotated[str, AfterValidator(check_relative_path)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileEntry(_Strict):
    """One file of the model, stored as the blob ``digest``; ``path`` is where it sits in the model."""

    path: RelativePath
    digest: Digest
    size: int = Field(ge=0)


class Layer(_Strict):
    """A Modelfile layer (system prompt, template, parameters, ...); its content is the blob ``digest``."""

    kind: LayerKind
    digest: Digest
    size: int = Field(ge=0)
    media_type: str = ""


class SourceInfo(_Strict):
    """Where the model came from: ``local`` (absolute path), ``hf``, ``ollama``, ``url``, ``bundle``, ``create``."""

    type: str = Field(min_length=1)
    ref: str
    revision: str | None = None

    def describe(self) -> str:
        """Where the model came from, for messages: ``imported from /x/m.gguf``, ``pulled from hf://...``."""
        if self.type == "local":
            return f"imported from {self.ref}"
        if self.type in ("hf", "ollama", "url"):
            return f"pulled from {self.ref}"
        if self.type == "create":
            return "created from a Modelfile"
        return f"from {self.type} {self.ref}"


class ModelDetails(_Strict):
    """Descriptive metadata read from the model files (all optional)."""

    architecture: str | None = None
    family: str | None = None
    parameter_count: int | None = Field(default=None, ge=0)
    parameter_size: str | None = None
    quantization: str | None = None
    context_length: int | None = Field(default=None, ge=0)


class Manifest(_Strict):
    """A model in the store: its name, files, layers, origin and details."""

    schema_version: int = SCHEMA_VERSION
    name: str
    tag: str
    format: ModelFormat
    files: list[FileEntry] = Field(min_length=1)
    layers: list[Layer] = Field(default_factory=list)
    source: SourceInfo
    details: ModelDetails = Field(default_factory=ModelDetails)
    created_at: datetime = Field(default_factory=utc_now)
    base: str | None = None

    @field_validator("schema_version")
    @classmethod
    def _supported_schema(cls, value: int) -> int:
        if value != SCHEMA_VERSION:
            raise ValueError(f"unsupported manifest schema_version {value} (this slmctl reads {SCHEMA_VERSION})")
        return value

    @field_validator("created_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("created_at must be timezone-aware")
        return value.astimezone(timezone.utc)

    @model_validator(mode="after")
    def _check(self) -> Manifest:
        try:
            canonical = parse_model_ref(f"{self.name}:{self.tag}")
        except UsageError as exc:
            raise ValueError(exc.message) from exc
        if canonical != ModelRef(self.name, self.tag):
            raise ValueError(f"model name '{self.name}:{self.tag}' is not in canonical (lower-case) form")
        _check_file_layout([entry.path for entry in self.files])
        return self

    @property
    def ref(self) -> ModelRef:
        """The model's ``name:tag``."""
        return ModelRef(self.name, self.tag)

    @property
    def primary_file(self) -> FileEntry:
        """The main file (the one llama.cpp opens for GGUF): ``files[0]``."""
        return self.files[0]

    @property
    def total_size(self) -> int:
        """Bytes on disk for files and layers, counting each distinct blob once."""
        sizes = {item.digest: item.size for item in [*self.files, *self.layers]}
        return sum(sizes.values())

    def blob_digests(self) -> set[str]:
        """Every blob digest this manifest references (files and layers)."""
        return {item.digest for item in [*self.files, *self.layers]}

    def layer(self, kind: LayerKind) -> Layer | None:
        """The first layer of ``kind``, or ``None``."""
        return next((layer for layer in self.layers if layer.kind == kind), None)

    def same_content(self, other: Manifest) -> bool:
        """Whether ``other`` is the same model: format, files and layers equal (name, origin, details aside)."""
        return (self.format, self.files, self.layers) == (other.format, other.files, other.layers)

    def digest(self) -> str:
        """``sha256:`` of the canonical JSON of the content (name, tag and created_at excluded)."""
        content = self.model_dump(mode="json", exclude=set(_IDENTITY_FIELDS))
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return DIGEST_PREFIX + hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def renamed(self, ref: ModelRef) -> Manifest:
        """A copy with another name/tag and a fresh ``created_at`` (same content, same digest)."""
        data = self.model_dump()
        data.update(name=ref.name, tag=ref.tag, created_at=utc_now())
        return Manifest.model_validate(data)

    def to_json(self) -> str:
        """Serialize (indented, stable key order as declared)."""
        return self.model_dump_json(indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        """Parse and validate; raises ``pydantic.ValidationError`` (a ``ValueError``) on bad input."""
        return cls.model_validate_json(text)


def _check_file_layout(paths: list[str]) -> None:
    """Reject duplicate paths and a file that is also used as a directory (``a`` and ``a/b``)."""
    seen: set[str] = set()
    for path in paths:
        if path in seen:
            raise ValueError(f"file path {path!r} appears twice")
        seen.add(path)
    directories = {"/".join(parts[:i]) for parts in (p.split("/") for p in paths) for i in range(1, len(parts))}
    clash = seen & directories
    if clash:
        raise ValueError(f"file path {sorted(clash)[0]!r} is also used as a directory")
