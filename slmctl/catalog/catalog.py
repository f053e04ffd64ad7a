"""The model catalog: popular small models, their aliases and downloadable variants.

The shipped catalog is package data (``catalog.json`` next to this module). A user file
``$SLMCTL_HOME/catalog.json`` of the same shape adds entries and replaces shipped ones that have the
same ``name``. Everything is validated with pydantic (unknown fields are errors); a broken user file
raises :class:`~slmctl.errors.InvalidModelFile` naming it (exit 4).

Lookup (:meth:`Catalog.resolve`) is case-insensitive on names and aliases. An alias may pin a quant
(``phi4:mini-q8_0``), and any name may carry a quant tag: ``phi4-mini:q8_0`` or ``phi4:mini-q8_0``.

Every Hugging Face variant of the shipped catalog is pinned to a repository commit (``revision``) or
says why it is not (``unpinned``: no commit of it is recorded in the research notes); an unpinned one
is pulled from ``main`` as it is that day (its files are still checked against the Hub's sha256).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from slmctl.errors import InvalidModelFile

USER_CATALOG = "catalog.json"
TASKS: tuple[str, ...] = ("chat", "code", "reasoning", "embedding")
SIZE_CLASSES: tuple[str, ...] = ("tiny", "small", "medium", "large")
FORMATS: tuple[str, ...] = ("gguf", "onnx")
VARIANT_DEVICES: tuple[str, ...] = ("any", "cpu", "gpu", "npu")
#: ONNX execution provider -> device class of the variant built for it.
PROVIDER_CLASS: dict[str, str] = {"cpu": "cpu", "cuda": "gpu", "dml": "gpu", "webgpu": "gpu", "qnn": "npu",
                                  "openvino": "npu"}

_QUANT_RE = re.compile(r"^(i?q\d(_\d)?(_k)?(_[a-z]{1,2})?|b?f16|f32|fp16|fp32|bf16|int4|int8|fp8|q4f16)$")
_PARAMS_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMBT])\s*$", re.IGNORECASE)
_SCALE = {"K": 1e-6, "M": 1e-3, "B": 1.0, "T": 1e3}


def normalize_quant(text: str) -> str:
    """Canonical spelling of a quant name: ``q4_k_m`` -> ``Q4_K_M``, ``fp16`` -> ``F16``, ``int4`` -> ``INT4``."""
    q = text.strip().upper().replace("-", "_").replace(".", "_")
    return {"FP16": "F16", "FP32": "F32"}.get(q, q)


def looks_like_quant(text: str) -> bool:
    """True for tags that name a quantisation (``q4_k_m``, ``Q8_0``, ``f16``, ``bf16``, ``int4``, ...)."""
    return bool(_QUANT_RE.match(text.strip().lower().replace("-", "_").replace(".", "_")))


def parameter_billions(size: str) -> float | None:
    """``"3.8B"`` -> 3.8, ``"135M"`` -> 0.135; None when unreadable."""
    match = _PARAMS_RE.match(size or "")
    if not match:
        return None
    return float(match.group(1)) * _SCALE[match.group(2).upper()]


def size_class_of(parameter_size: str) -> str | None:
    """tiny (< 1B), small (1-4B), medium (4-10B), large (> 10B)."""
    billions = parameter_billions(parameter_size)
    if billions is None:
        return None
    if billions < 1:
        return "tiny"
    if billions <= 4:
        return "small"
    if billions <= 10:
        return "medium"
    return "large"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Variant(_Strict):
    """One downloadable form of a model."""

    format: Literal["gguf", "onnx"]
    #: Canonical quant name (``Q4_K_M``, ``Q8_0``, ``F16``, ``BF16``, ``INT4``, ``FP32``, ...).
    quant: str = Field(min_length=1)
    #: ``any`` for GGUF (llama.cpp runs it on CPU or GPU), else the device class the ONNX build targets.
    device: Literal["any", "cpu", "gpu", "npu"]
    #: The ONNX execution provider the build is made for (``cuda``, ``dml``, ``qnn``, ...), if specific.
    provider: str | None = None
    #: ``hf://owner/repo/file.gguf`` or ``hf://owner/repo[/onnx-folder]``.
    source: str = Field(min_length=1)
    #: Exact size in bytes when known.
    size: int | None = Field(default=None, ge=0)
    #: The repository commit the variant is pinned to (Hugging Face sources; ``main`` when absent).
    revision: str | None = None
    #: Why no revision is pinned (the shipped catalog gives one or the other for every Hugging Face variant).
    unpinned: str | None = None
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    #: Files to fetch, relative to ``source`` (default: every file of the folder / the one GGUF file).
    files: list[str] | None = None
    #: ``genai`` (ONNX Runtime GenAI decoder folder) or ``encoder`` (plain ONNX Runtime embedding model).
    runtime: Literal["genai", "encoder"] | None = None
    #: Publisher's detailed quant description (``int4-rtn-block-32-acc4``).
    detail: str | None = None

    @field_validator("quant")
    @classmethod
    def _quant(cls, value: str) -> str:
        return normalize_quant(value)

    @field_validator("provider")
    @classmethod
    def _provider(cls, value: str | None) -> str | None:
        if value is None:
            return None
        key = value.strip().lower()
        if key not in PROVIDER_CLASS:
            raise ValueError(f"unknown provider {value!r} (expected one of: {', '.join(PROVIDER_CLASS)})")
        return key

    @model_validator(mode="after")
    def _check(self) -> Variant:
        if self.revision is not None and self.unpinned is not None:
            raise ValueError("a variant with a revision is pinned: drop 'unpinned'")
        if self.format == "gguf":
            if self.device != "any":
                raise ValueError("a gguf variant has device 'any'")
            if self.provider is not None:
                raise ValueError("a gguf variant has no provider")
            if not self.source.lower().endswith(".gguf"):
                raise ValueError(f"a gguf variant's source must name a .gguf file: {self.source}")
        else:
            if self.device == "any":
                raise ValueError("an onnx variant has device cpu, gpu or npu")
            if self.provider is not None and PROVIDER_CLASS[self.provider] != self.device:
                raise ValueError(f"provider {self.provider!r} does not run on device {self.device!r}")
        from slmctl.refs import parse_source  # the source must be a valid reference

        if parse_source(self.source) is None:
            raise ValueError(f"not a source reference: {self.source}")
        return self

    @property
    def label(self) -> str:
        """``gguf Q4_K_M``, ``onnx INT4 gpu/dml`` (for messages)."""
        where = self.device if self.format == "onnx" else ""
        if self.provider:
            where += f"/{self.provider}"
        return " ".join(p for p in (self.format, self.quant, where) if p)

    def public(self) -> dict[str, object]:
        """The ``{format, quant, device, source, size}`` shape of ``list --available --json`` (+ provider,
        + revision: the pinned commit, or None when the variant follows ``main``)."""
        data: dict[str, object] = {"format": self.format, "quant": self.quant, "device": self.device,
                                   "source": self.source, "size": self.size, "revision": self.revision}
        if self.provider:
            data["provider"] = self.provider
        return data


class Alias(_Strict):
    """An alias that pins a variant: ``{"name": "phi4:mini-q8_0", "quant": "Q8_0"}``."""

    name: str = Field(min_length=1)
    quant: str | None = None

    @field_validator("quant")
    @classmethod
    def _quant(cls, value: str | None) -> str | None:
        return None if value is None else normalize_quant(value)


class CatalogEntry(_Strict):
    """One model of the catalog."""

    name: str = Field(min_length=1)
    aliases: list[str | Alias] = Field(default_factory=list)
    task: Literal["chat", "code", "reasoning", "embedding"]
    parameter_size: str = Field(min_length=1)
    size_class: Literal["tiny", "small", "medium", "large"] | None = None
    context_length: int | None = Field(default=None, gt=0)
    license: str | None = None
    ollama: str | None = None
    description: str | None = None
    variants: list[Variant] = Field(min_length=1)

    @model_validator(mode="after")
    def _fill(self) -> CatalogEntry:
        if self.size_class is None:
            computed = size_class_of(self.parameter_size)
            if computed is None:
                raise ValueError(f"cannot read parameter_size {self.parameter_size!r}; give size_class")
            object.__setattr__(self, "size_class", computed)
        return self

    @property
    def alias_names(self) -> list[str]:
        """Every other accepted name (strings, pinned ones included)."""
        return [a if isinstance(a, str) else a.name for a in self.aliases]

    def keys(self) -> list[tuple[str, str | None]]:
        """(lower-cased name, pinned quant) for the name and each alias."""
        out: list[tuple[str, str | None]] = [(self.name.lower(), None)]
        for alias in self.aliases:
            out.append((alias.lower(), None) if isinstance(alias, str) else (alias.name.lower(), alias.quant))
        return out

    @property
    def quants(self) -> list[str]:
        return list(dict.fromkeys(v.quant for v in self.variants))


class CatalogFile(_Strict):
    """The file shape: ``{"version": 1, "models": [...]}``."""

    version: Literal[1] = 1
    models: list[CatalogEntry] = Field(default_factory=list)


class Catalog:
    """The merged catalog with a case-insensitive index of names and aliases."""

    def __init__(self, entries: Iterable[CatalogEntry]) -> None:
        self.entries: list[CatalogEntry] = list(entries)
        self._index: dict[str, tuple[CatalogEntry, str | None]] = {}
        for entry in self.entries:  # later entries (user file) win
            for key, quant in entry.keys():
                self._index[key] = (entry, quant)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, name: str) -> CatalogEntry | None:
        """The entry whose canonical name is ``name`` (case-insensitive)."""
        key = name.strip().lower()
        return next((e for e in self.entries if e.name.lower() == key), None)

    def names(self) -> list[str]:
        """Every accepted name (canonical names and aliases), lower-cased."""
        return list(self._index)

    def resolve(self, text: str) -> tuple[CatalogEntry, str | None] | None:
        """``(entry, pinned quant or None)`` for a catalog name, or None.

        Accepts a name or alias (case-insensitive), ``alias:latest``, ``alias:<quant>`` and
        ``alias-<quant>`` (the latter for aliases that already hold a tag, ``phi4:mini-q8_0``).
        """
        key = (text or "").strip().lower()
        if not key:
            return None
        if key in self._index:
            return self._index[key]
        base, sep, tag = key.rpartition(":")
        if sep and base in self._index:
            entry, pinned = self._index[base]
            if tag == "latest":
                return entry, pinned
            if pinned is None and looks_like_quant(tag):
                return entry, normalize_quant(tag)
        base, sep, tag = key.rpartition("-")
        if sep and base in self._index and looks_like_quant(tag):
            entry, pinned = self._index[base]
            if pinned is None:
                return entry, normalize_quant(tag)
        return None

    def closest(self, text: str, n: int = 3) -> list[str]:
        """Up to ``n`` accepted names that look like ``text`` (for the ``did you mean`` hint)."""
        key = (text or "").strip().lower()
        return difflib.get_close_matches(key, self.names(), n=n, cutoff=0.6)


def _parse(text: str, origin: str) -> CatalogFile:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidModelFile(f"invalid catalog file {origin}: {exc}",
                               hint="fix the JSON or remove the file") from exc
    try:
        parsed = CatalogFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise InvalidModelFile(
            f"invalid catalog file {origin}: {where or 'top level'}: {first.get('msg')}"
            + (f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""),
            hint='the file must look like {"version": 1, "models": [{"name", "task", "parameter_size", "variants"}]}',
        ) from exc
    names = [m.name.lower() for m in parsed.models]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InvalidModelFile(f"invalid catalog file {origin}: duplicate model name(s): {', '.join(dupes)}",
                               hint="each model name may appear once")
    return parsed


def shipped_catalog_text() -> str:
    return resources.files("slmctl.catalog").joinpath("catalog.json").read_text(encoding="utf-8")


def load_catalog(home: Path | None = None) -> Catalog:
    """The shipped catalog, extended/overridden by ``home/catalog.json`` when ``home`` has one."""
    entries = list(_parse(shipped_catalog_text(), "slmctl/catalog/catalog.json (shipped)").models)
    if home is not None:
        user = Path(home) / USER_CATALOG
        if user.is_file():
            try:
                text = user.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise InvalidModelFile(f"cannot read catalog file {user}: {exc}",
                                       hint="fix or remove the file") from exc
            overrides = _parse(text, str(user)).models
            replaced = {m.name.lower() for m in overrides}
            entries = [e for e in entries if e.name.lower() not in replaced] + list(overrides)
    return Catalog(entries)
