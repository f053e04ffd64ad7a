"""THE table of generation and load options.

One definition serves ``run --param``, the Modelfile ``PARAMETER`` instruction and (later) the API
``options`` object: names, types, ranges, Ollama's defaults, aliases, and which options are load-time
(changing them needs a reload). It also holds the one mapping from our option names to each runtime's
argument names. This module imports nothing of ours but the error types.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from slmctl.errors import UsageError


class SamplingOptions(BaseModel):
    """Per-request options. Defaults are Ollama's, identical on every backend."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    temperature: float = Field(0.8, ge=0.0, le=5.0, description="sampling temperature; 0 = greedy")
    top_k: int = Field(40, ge=0, description="keep the K most likely tokens; 0 = all")
    top_p: float = Field(0.9, ge=0.0, le=1.0, description="nucleus sampling threshold")
    min_p: float = Field(0.0, ge=0.0, le=1.0, description="drop tokens below min_p x the top probability")
    typical_p: float = Field(1.0, ge=0.0, le=1.0, description="locally typical sampling; 1 = off")
    repeat_penalty: float = Field(1.0, ge=0.0, le=10.0, description="penalty for repeated tokens; 1 = off")
    repeat_last_n: int = Field(64, ge=-1, description="how many recent tokens the repeat penalty sees")
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0, description="penalty for tokens already present")
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0, description="penalty by token frequency")
    seed: int = Field(-1, ge=-1, le=2**32 - 2, description="random seed; -1 = random")
    num_predict: int = Field(-1, ge=-1, description="maximum tokens to generate; -1 = until the context is full")
    stop: list[str] = Field(default_factory=list, description="stop strings (repeatable)")


class LoadOptions(BaseModel):
    """Load-time options: changing one needs the model to be loaded again."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    num_ctx: int = Field(4096, ge=0, description="context window in tokens (capped at the model's); 0 = the model's")
    num_batch: int = Field(512, ge=1, description="prompt tokens processed per batch")
    num_gpu: int = Field(-1, ge=-1, description="layers to offload to the GPU; -1 = all when a GPU is usable")
    main_gpu: int = Field(0, ge=0, description="index of the GPU to use")
    num_thread: int = Field(0, ge=0, description="CPU threads; 0 = the number of physical cores")
    use_mmap: bool = Field(True, description="memory-map the model file")
    flash_attn: bool = Field(False, description="use flash attention where the runtime supports it")


#: Other names accepted for an option (the seed's Modelfile uses ``context_length``).
ALIASES: dict[str, str] = {
    "context_length": "num_ctx",
    "max_tokens": "num_predict",
    "num_threads": "num_thread",
    "flash_attention": "flash_attn",
}

#: Our option name -> llama-cpp-python argument name (sampling: ``Llama.generate``; load: ``Llama()``).
#: An option absent from the mapping is handled by the backend itself (seed, stop, num_predict, ...).
LLAMA_CPP_NAMES: dict[str, str] = {
    "temperature": "temp",
    "top_k": "top_k",
    "top_p": "top_p",
    "min_p": "min_p",
    "typical_p": "typical_p",
    "repeat_penalty": "repeat_penalty",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "num_ctx": "n_ctx",
    "num_batch": "n_batch",
    "num_gpu": "n_gpu_layers",
    "main_gpu": "main_gpu",
    "num_thread": "n_threads",
    "use_mmap": "use_mmap",
    "flash_attn": "flash_attn",
}

#: Our option name -> onnxruntime-genai search option (``GeneratorParams.set_search_options``).
ONNX_GENAI_NAMES: dict[str, str] = {
    "temperature": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "repeat_penalty": "repetition_penalty",
    "seed": "random_seed",
    "num_thread": "intra_op_num_threads",
}

#: Options onnxruntime-genai has no equivalent for: a value other than the default is ignored there,
#: with a warning (``unsupported_options``).
ONNX_GENAI_UNSUPPORTED: tuple[str, ...] = ("min_p", "typical_p", "presence_penalty", "frequency_penalty",
                                           "repeat_last_n", "num_batch", "use_mmap", "flash_attn", "num_gpu")

SAMPLING_KEYS: tuple[str, ...] = tuple(SamplingOptions.model_fields)
LOAD_KEYS: tuple[str, ...] = tuple(LoadOptions.model_fields)
ALL_KEYS: tuple[str, ...] = SAMPLING_KEYS + LOAD_KEYS
REPEATABLE_KEYS = frozenset({"stop"})


def valid_keys_text() -> str:
    """The accepted option names, for error hints and help."""
    return ", ".join(ALL_KEYS)


def canonical_key(key: str) -> str:
    """Map a user-given option name (any case, or an alias) to its canonical name."""
    k = key.strip().lower()
    k = ALIASES.get(k, k)
    if k in ALL_KEYS:
        return k
    close = difflib.get_close_matches(k, list(ALL_KEYS) + list(ALIASES), n=1)
    suggestion = f"did you mean '{close[0]}'? " if close else ""
    raise UsageError(f"unknown parameter {key.strip()!r}", f"{suggestion}valid parameters: {valid_keys_text()}")


def _model_for(key: str) -> type[BaseModel]:
    return SamplingOptions if key in SAMPLING_KEYS else LoadOptions


def parse_value(key: str, raw: Any) -> Any:
    """Validate one value for option ``key`` (canonical); strings are converted ("0.7" -> 0.7)."""
    model = _model_for(key)
    value = [raw] if key in REPEATABLE_KEYS and isinstance(raw, str) else raw
    if isinstance(value, str) and model.model_fields[key].annotation is bool:
        value = value.strip().lower()
    try:
        checked = model.model_validate({key: value})
    except ValidationError as exc:
        why = exc.errors()[0].get("msg", "invalid value")
        field = model.model_fields[key]
        raise UsageError(
            f"invalid value {raw!r} for parameter {key!r}: {why}",
            f"{key}: {field.description} (default {field.get_default(call_default_factory=True)!r})",
        ) from None
    return getattr(checked, key)


def parse_param_pairs(pairs: Iterable[str]) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` strings (``run --param``); ``stop`` accumulates across repeats."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"invalid --param {pair!r}: expected KEY=VALUE", f"valid keys: {valid_keys_text()}")
        add_value(values, key, raw)
    return values


def add_value(values: dict[str, Any], key: str, raw: Any) -> str:
    """Validate ``raw`` for ``key`` and store it in ``values`` (accumulating repeatable keys)."""
    name = canonical_key(key)
    parsed = parse_value(name, raw)
    if name in REPEATABLE_KEYS:
        values[name] = list(values.get(name, [])) + list(parsed)
    else:
        values[name] = parsed
    return name


def build_options(*layers: Mapping[str, Any]) -> tuple[LoadOptions, SamplingOptions]:
    """Merge option layers (later wins; a later ``stop`` list replaces an earlier one) into typed options."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            merged[canonical_key(key)] = value
    load = {k: v for k, v in merged.items() if k in LOAD_KEYS}
    sampling = {k: v for k, v in merged.items() if k in SAMPLING_KEYS}
    try:
        return LoadOptions(**load), SamplingOptions(**sampling)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise UsageError(f"invalid option {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


def capped_context(requested: int, limit: int | None) -> int:
    """The context a model runs with: ``requested`` (``num_ctx``; 0 or less = the model's own) within
    ``limit`` (what the model was trained for, or what its runtime gave; None or 0 = unknown). The one place
    this is computed: the engine's plan, the backends' loads and ``create``'s context check use it."""
    if not limit:
        return requested
    return limit if requested <= 0 else min(requested, limit)


def unsupported_options(runtime: str, unsupported: Iterable[str], *options: BaseModel) -> list[str]:
    """Warnings for options set away from their default that ``runtime`` cannot honour."""
    warnings = []
    for group in options:
        changed = non_default(group)
        for key in unsupported:
            if key in changed:
                warnings.append(f"{key}={changed[key]!r} is not supported by {runtime} and is ignored")
    return warnings


def non_default(options: BaseModel) -> dict[str, Any]:
    """The options whose value differs from the default (for ``show --parameters``)."""
    return {k: v for k, v in options.model_dump().items()
            if v != type(options).model_fields[k].get_default(call_default_factory=True)}
