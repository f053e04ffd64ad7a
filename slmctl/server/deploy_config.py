"""The ``slmctl serve --config`` file: its schema, and how the seed's deployment shapes map onto serve settings.

A config file is one JSON object. It may hold serve's own flat keys (``host``, ``parallel``, ``preload`` ...,
validated by :mod:`slmctl.server.serve_settings`) and the two nested shapes of the seed, validated here by
pydantic models that forbid unknown keys. An unknown key or a bad value is an :class:`InvalidConfig` (exit 4)
naming the key path (``deployment.optimization.max_contxt``) and the closest valid key. Mapping, and what
the server does with each key (a key the server cannot honour is refused, never ignored):

=============================================================  ==================================================
``deployment.model``                                           ``preload`` (+ ``pull_missing``: pulled at start
                                                               when the store lacks it and is writable; with
                                                               ``read_only_store`` a missing model stops start-up)
``deployment.optimization.quantization``                       the variant: ``dynamic``/``auto`` = the catalog's
                                                               choice for this hardware (``slmctl pull MODEL``);
                                                               a quant (``q4_k_m``, ``int4``) = ``MODEL:QUANT``
``deployment.hardware.preferred`` + ``fallback``               ``device``: preference order, first usable wins
``deployment.optimization.batch_size``                         ``parallel`` (slots a model decodes together)
``performance.parallel_requests``                              ``parallel``
``performance.hardware_scheduling.max_batch_size``             ``parallel``; with several, the smallest wins
``performance.batch_processing`` / ``enable_dynamic_batching`` true: continuous batching (always on for GGUF);
                                                               false: ``parallel`` = 1 (a count > 1 beside it is
                                                               refused as contradictory)
``deployment.optimization.max_context``                        ``num_ctx`` (the context models load with)
``performance.memory_optimization.max_cache_size``             ``kv_cache_size`` (KV cache budget per model: the
                                                               context is cut to fit slots x num_ctx tokens)
``performance.memory_optimization.enable_kv_cache``            true: as always; false is refused (decoding needs
                                                               a KV cache)
``deployment.api.port``                                        ``port``
``deployment.api.openai_compatible``                           ``openai`` (false: /v1 is not served, 404)
=============================================================  ==================================================

A flat key and a nested key that set the same setting with different values are refused as contradictory.
Only JSON is read (a ``.yaml`` file is refused with a hint). This module imports pydantic, never fastapi.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from slmctl.errors import InvalidConfig

#: ``quantization`` values meaning "the catalog picks the variant for this machine".
AUTO_QUANT = ("dynamic", "auto")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Hardware(_Strict):
    preferred: Optional[str] = None
    fallback: Union[list[str], str, None] = None


class Optimization(_Strict):
    quantization: Optional[str] = None
    batch_size: Optional[int] = Field(None, ge=1)
    max_context: Optional[int] = Field(None, ge=0)


class Api(_Strict):
    port: Optional[int] = Field(None, ge=0, le=65535)
    openai_compatible: Optional[bool] = None


class Deployment(_Strict):
    model: Optional[str] = Field(None, min_length=1)
    hardware: Optional[Hardware] = None
    optimization: Optional[Optimization] = None
    api: Optional[Api] = None


class MemoryOptimization(_Strict):
    enable_kv_cache: Optional[bool] = None
    max_cache_size: Union[int, str, None] = None


class HardwareScheduling(_Strict):
    enable_dynamic_batching: Optional[bool] = None
    max_batch_size: Optional[int] = Field(None, ge=1)


class Performance(_Strict):
    batch_processing: Optional[bool] = None
    parallel_requests: Optional[int] = Field(None, ge=1)
    memory_optimization: Optional[MemoryOptimization] = None
    hardware_scheduling: Optional[HardwareScheduling] = None


def file_model(flat_keys: Sequence[str]) -> type[BaseModel]:
    """The schema of a whole file: the flat keys (any JSON value, checked by the serve settings schema)
    and the two nested shapes."""
    fields: dict[str, Any] = {key: (Any, None) for key in flat_keys}
    fields.update(deployment=(Optional[Deployment], None), performance=(Optional[Performance], None))
    return create_model("ServeConfigFile", __config__=ConfigDict(extra="forbid"), **fields)


def _valid_keys(model: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    """The keys valid where ``loc`` points (the parent object of the offending key)."""
    current: Any = model
    for part in loc[:-1]:
        fields = getattr(current, "model_fields", {})
        if part not in fields:
            return []
        annotation = fields[part].annotation
        args = [a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)]
        current = next((a for a in args if issubclass(a, BaseModel)), None)
        if current is None:
            return []
    return list(getattr(current, "model_fields", {}))


def closest(word: str, choices: Sequence[str]) -> str | None:
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return found[0] if found else None


_TYPES = frozenset({"str", "int", "bool", "float", "none"})


def config_error(path: Path, error: ValidationError, model: type[BaseModel]) -> InvalidConfig:
    first = error.errors()[0]
    # drop the union branches pydantic names in a location (``fallback.list[str]``, ``max_cache_size.int``)
    loc = [part for part in first["loc"] if not (isinstance(part, str) and ("[" in part or part in _TYPES))]
    key = ".".join(str(part) for part in loc)
    if first["type"] == "extra_forbidden":
        valid = _valid_keys(model, loc)
        near = closest(str(loc[-1]), valid)
        return InvalidConfig(f"unknown key '{key}' in {path}" + (f" (did you mean '{_sibling(key, near)}'?)"
                                                                 if near else ""),
                             f"valid keys there: {', '.join(valid)}; see 'slmctl serve --help'")
    return InvalidConfig(f"invalid value for '{key}' in {path}: {first['msg']} (got {first.get('input')!r})",
                         "see 'slmctl serve --help' and configs/README.md")


def _sibling(key: str, name: str) -> str:
    head, _, _ = key.rpartition(".")
    return f"{head}.{name}" if head else name


def read_file(path: Path, flat_keys: Sequence[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The flat settings a config file sets, and for each the key path it came from."""
    if path.suffix.lower() in (".yaml", ".yml"):
        raise InvalidConfig(f"cannot read {path}: only JSON config files are read", "convert it to JSON")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidConfig(f"cannot read --config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidConfig(f"--config {path} must hold a JSON object")
    model = file_model(flat_keys)
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        raise config_error(path, exc, model) from None
    values = {key: data[key] for key in flat_keys if key in data}
    paths = {key: key for key in values}
    nested = _map_nested(path, parsed.deployment, parsed.performance)  # type: ignore[attr-defined]
    for key, (value, where) in nested.items():
        if key in values and values[key] != value and not (key == "preload" and _same_preload(values[key], value)):
            raise InvalidConfig(f"{path}: '{key}' and '{where}' both set {key}, differently",
                                f"keep one of them (the nested keys map onto {key})")
        values.setdefault(key, value)
        paths.setdefault(key, where)
    return values, paths


def _same_preload(flat: Any, value: Any) -> bool:
    names = [flat] if isinstance(flat, str) else list(flat or ())
    return list(value)[0] in names


def _map_nested(path: Path, deployment: Deployment | None, performance: Performance | None
                ) -> dict[str, tuple[Any, str]]:
    """The seed's nested shapes as flat settings: ``{key: (value, key path)}`` (see the module docstring)."""
    out: dict[str, tuple[Any, str]] = {}
    counts: list[tuple[int, str]] = []
    serial: list[str] = []
    if deployment is not None:
        optimization = deployment.optimization or Optimization()
        if deployment.model:
            out["preload"] = ([_variant_name(path, deployment.model, optimization.quantization)], "deployment.model")
            out["pull_missing"] = (True, "deployment.model")
        elif optimization.quantization is not None:
            raise InvalidConfig(f"{path}: 'deployment.optimization.quantization' needs 'deployment.model'",
                                "name the model whose variant it picks")
        hardware = deployment.hardware
        if hardware is not None and (hardware.preferred or hardware.fallback):
            fallback = [hardware.fallback] if isinstance(hardware.fallback, str) else list(hardware.fallback or ())
            order = [hardware.preferred] if hardware.preferred else []
            out["device"] = (list(dict.fromkeys(order + fallback)), "deployment.hardware")
        if optimization.batch_size is not None:
            counts.append((optimization.batch_size, "deployment.optimization.batch_size"))
        if optimization.max_context is not None:
            out["num_ctx"] = (optimization.max_context, "deployment.optimization.max_context")
        if deployment.api is not None and deployment.api.port is not None:
            out["port"] = (deployment.api.port, "deployment.api.port")
        if deployment.api is not None and deployment.api.openai_compatible is not None:
            out["openai"] = (deployment.api.openai_compatible, "deployment.api.openai_compatible")
    if performance is not None:
        if performance.parallel_requests is not None:
            counts.append((performance.parallel_requests, "performance.parallel_requests"))
        if performance.batch_processing is False:
            serial.append("performance.batch_processing")
        scheduling = performance.hardware_scheduling
        if scheduling is not None and scheduling.max_batch_size is not None:
            counts.append((scheduling.max_batch_size, "performance.hardware_scheduling.max_batch_size"))
        if scheduling is not None and scheduling.enable_dynamic_batching is False:
            serial.append("performance.hardware_scheduling.enable_dynamic_batching")
        memory = performance.memory_optimization
        if memory is not None and memory.enable_kv_cache is False:
            raise InvalidConfig(f"{path}: 'performance.memory_optimization.enable_kv_cache: false' cannot be honoured:"
                                " decoding needs a KV cache", "remove the key, or set it to true; bound the cache's "
                                "size with max_cache_size instead")
        if memory is not None and memory.max_cache_size is not None:
            out["kv_cache_size"] = (memory.max_cache_size, "performance.memory_optimization.max_cache_size")
    if serial:
        many = [(n, where) for n, where in counts if n > 1]
        if many:
            raise InvalidConfig(f"{path}: '{serial[0]}: false' asks for one request at a time, but "
                                f"'{many[0][1]}' asks for {many[0][0]}", "remove one of them")
        out["parallel"] = (1, serial[0])
    elif counts:
        out["parallel"] = min(counts)
    return out


def _variant_name(path: Path, model: str, quantization: str | None) -> str:
    """The name to pull and serve: ``MODEL`` (the catalog picks the variant) or ``MODEL:QUANT``."""
    from slmctl.catalog.catalog import looks_like_quant

    if quantization is None or quantization.strip().lower() in AUTO_QUANT:
        return model
    quant = quantization.strip().lower()
    if not looks_like_quant(quant):
        raise InvalidConfig(f"invalid value for 'deployment.optimization.quantization' in {path}: {quantization!r}",
                            f"use {' or '.join(AUTO_QUANT)} (the catalog's choice for this machine) or a quant "
                            "such as q4_k_m, q8_0, f16, int4 (see 'slmctl list --available')")
    if ":" in model.rsplit("/", 1)[-1]:
        raise InvalidConfig(f"{path}: 'deployment.model' {model!r} already has a tag; "
                            "'deployment.optimization.quantization' would add another", "drop one of them")
    return f"{model}:{quant}"
