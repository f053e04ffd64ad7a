"""How serve's deployment settings shape a model's load plan: the KV cache budget and the device fallback notice.

- ``--kv-cache-size`` (a config file's ``performance.memory_optimization.max_cache_size``): a loaded model's
  KV cache holds ``slots x num_ctx`` tokens (GGUF: continuous batching) or ``num_ctx`` tokens (ONNX, one
  request at a time); each token costs ``2 x layers x kv_heads x head_dim x bytes``, read from the GGUF
  header or the ONNX folder's ``genai_config.json`` (f16 cache on GGUF; fp32 assumed on ONNX, the safe side).
  The plan's context is cut so the cache fits the budget (logged once per model); a budget that cannot hold
  even :data:`MIN_CONTEXT` tokens is a 400 naming both numbers. A model whose size cannot be read keeps its
  context, with a warning once.
- ``--device`` (``deployment.hardware.preferred`` / ``fallback``): when the device chosen is not the first
  preference, the fallback is logged once per model format.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from slmctl.devices import DEVICE_CLASSES, vocabulary
from slmctl.engine import LoadPlan
from slmctl.errors import UsageError
from slmctl.server.config import ServeConfig

log = logging.getLogger("slmctl.server")
#: The smallest context a KV budget may leave a model with.
MIN_CONTEXT = 128


class LoadPolicy:
    """Applies the budget and logs fallbacks; one per server (it remembers what it already logged)."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self._said: set[tuple[str, ...]] = set()
        self._per_token: dict[str, int | None] = {}

    def _once(self, key: tuple[str, ...], level: int, message: str, *args: object) -> None:
        if key not in self._said:
            self._said.add(key)
            log.log(level, message, *args)

    def apply(self, plan: LoadPlan) -> LoadPlan:
        self.note_fallback(plan)
        return self.fit_kv_budget(plan)

    def note_fallback(self, plan: LoadPlan) -> None:
        preferred = self.config.device[:1]
        if not preferred:
            return
        wanted = preferred[0]
        names = vocabulary(plan.format)
        matches = plan.device == wanted or (wanted in DEVICE_CLASSES and names.get(plan.device) == wanted)
        if not matches:
            self._once(("fallback", plan.format), logging.WARNING,
                       "preferred device %s is not available for %s models here: falling back to %s",
                       wanted, plan.format, plan.device)

    def fit_kv_budget(self, plan: LoadPlan) -> LoadPlan:
        budget = self.config.kv_cache_size
        if budget is None or plan.embedding:
            return plan
        per_token = self.per_token(plan)
        if per_token is None:
            self._once(("kv-unknown", plan.model), logging.WARNING, "%s: cannot size its KV cache; "
                       "--kv-cache-size does not apply to it", plan.model)
            return plan
        slots = self.config.slots(plan.device) if plan.format == "gguf" else 1
        room = budget // (slots * per_token)
        if room < MIN_CONTEXT:
            raise UsageError(f"the KV cache budget ({budget} bytes, --kv-cache-size) cannot hold {MIN_CONTEXT} tokens "
                             f"for '{plan.model}' ({slots} slot(s) x {per_token} bytes a token)",
                             "raise the budget or lower --parallel")
        if plan.options.num_ctx and plan.options.num_ctx <= room:
            return plan
        self._once(("kv-cut", plan.model, str(room)), logging.INFO, "%s: context cut to %d tokens to fit the KV "
                   "cache budget of %d bytes (%d slot(s))", plan.model, room, budget, slots)
        return replace(plan, options=plan.options.model_copy(update={"num_ctx": room}))

    def per_token(self, plan: LoadPlan) -> int | None:
        """Bytes of KV cache one token of context costs on ``plan``'s model (None: unknown)."""
        key = plan.digest
        if key not in self._per_token:
            try:
                self._per_token[key] = _gguf_per_token(plan.path) if plan.format == "gguf" else \
                    _onnx_per_token(plan.path)
            except Exception:  # noqa: BLE001 - an unreadable size only means no budget for this model
                self._per_token[key] = None
        return self._per_token[key]


def _gguf_per_token(path: Path) -> int | None:
    from slmctl.formats.gguf_info import inspect_gguf

    info = inspect_gguf(path)
    meta, arch = info.metadata, info.architecture

    def number(name: str) -> int | None:
        value = meta.get(f"{arch}.{name}")
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    layers, heads = number("block_count"), number("attention.head_count")
    kv_heads = number("attention.head_count_kv") or heads
    embedding = number("embedding_length")
    if not (layers and heads and kv_heads and embedding):
        return None
    key_length = number("attention.key_length") or embedding // heads
    value_length = number("attention.value_length") or embedding // heads
    return layers * kv_heads * (key_length + value_length) * 2  # f16 K and V


def _onnx_per_token(path: Path) -> int | None:
    config = json.loads((path / "genai_config.json").read_text(encoding="utf-8"))
    decoder = config["model"]["decoder"]
    layers, kv_heads, head_size = decoder["num_hidden_layers"], decoder["num_key_value_heads"], decoder["head_size"]
    return int(layers) * int(kv_heads) * int(head_size) * 2 * 4  # K and V, fp32 (the safe side)
