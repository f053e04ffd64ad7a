"""The engine: from a stored model to a loaded runtime model.

It reads a manifest's Modelfile layers (parameters, system prompt, messages), merges option layers,
caps the context at what the model was trained for, applies a requested device, and loads through the
backend for the model's format. The CLI's ``run`` and (later) the server share it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from slmctl.backends.base import ChatMessage, LoadedModel
from slmctl.backends.registry import BackendRegistry
from slmctl.errors import DeviceUnavailable, InvalidModelFile
from slmctl.names import parse_model_ref
from slmctl.options import LoadOptions
from slmctl.store import Manifest, ModelStore

GPU_DEVICES = ("gpu", "cuda", "metal", "vulkan", "rocm")


@dataclass(frozen=True)
class ModelDefaults:
    """What a model's Modelfile layers contribute to every request."""

    params: dict[str, Any] = field(default_factory=dict)
    system: str | None = None
    template: str | None = None
    messages: tuple[ChatMessage, ...] = ()
    license: tuple[str, ...] = ()


class Engine:
    """Resolves names, reads model defaults and loads models through their backend."""

    def __init__(self, store: ModelStore, backends: BackendRegistry | None = None) -> None:
        self.store = store
        self.backends = backends or BackendRegistry()

    def manifest(self, name: str) -> Manifest:
        """The stored manifest for a local model name (raises ModelNotFound)."""
        return self.store.get(parse_model_ref(name))

    def _layer_text(self, manifest: Manifest, kind: str) -> list[str]:
        return [self.store.blob_path(layer.digest).read_text(encoding="utf-8")
                for layer in manifest.layers if layer.kind == kind]

    def defaults(self, manifest: Manifest) -> ModelDefaults:
        """Parameters, system prompt, template, messages and licenses stored with the model."""
        try:
            params = {k: v for text in self._layer_text(manifest, "params") for k, v in json.loads(text).items()}
            messages = tuple(ChatMessage(m["role"], m["content"])
                             for text in self._layer_text(manifest, "messages") for m in json.loads(text))
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidModelFile(f"model '{manifest.ref}' has a damaged layer: {exc}",
                                   "run 'slmctl verify' or create the model again") from exc
        systems = self._layer_text(manifest, "system")
        templates = self._layer_text(manifest, "template")
        return ModelDefaults(params=params, system=systems[-1] if systems else None,
                             template=templates[-1] if templates else None, messages=messages,
                             license=tuple(self._layer_text(manifest, "license")))

    def load_options_for(self, manifest: Manifest, options: LoadOptions, device: str | None) -> LoadOptions:
        """Cap the context at the model's and translate a requested device into options."""
        trained = manifest.details.context_length
        num_ctx = options.num_ctx
        if trained:
            num_ctx = trained if num_ctx == 0 else min(num_ctx, trained)
        update: dict[str, Any] = {"num_ctx": num_ctx}
        if device is not None:
            available = self.devices(manifest.format)
            wanted = "gpu" if device in GPU_DEVICES else device
            if wanted not in available:
                raise DeviceUnavailable(
                    f"device {device!r} is not available for {manifest.format} models on this machine",
                    f"available devices: {', '.join(available)}",
                )
            if wanted == "cpu":
                update["num_gpu"] = 0
        return options.model_copy(update=update)

    def devices(self, fmt: str) -> list[str]:
        return self.backends.get(fmt).devices()

    def load(self, manifest: Manifest, options: LoadOptions, *, device: str | None = None,
             embedding: bool = False) -> LoadedModel:
        """Load ``manifest``'s model with ``options`` (already merged) on ``device``."""
        backend = self.backends.get(manifest.format)
        final = self.load_options_for(manifest, options, device)
        return backend.load(self.store.model_path(manifest), final, embedding=embedding)
