"""The engine: from a stored model to a loaded runtime model.

It reads a manifest's Modelfile layers (parameters, system prompt, messages), caps the context at what
the model was trained for, chooses the device (a requested one, or the best usable one in the order of
preference), and loads through the backend for the model's format. The CLI's ``run`` and (later) the server share it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from slmctl.backends.base import ChatMessage, LoadedModel
from slmctl.backends.registry import BackendRegistry
from slmctl.devices import DEFAULT_PREFERENCE, select_device
from slmctl.errors import InvalidModelFile
from slmctl.names import parse_model_ref
from slmctl.options import LoadOptions
from slmctl.store import Manifest, ModelStore

def compose_system(system: str | None, documents: Sequence[tuple[str, str]]) -> str | None:
    """The system context: the system prompt followed by the knowledge documents (FILE)."""
    parts = [system] if system else []
    parts += [f"<document name=\"{name}\">\n{text.strip()}\n</document>" for name, text in documents]
    return "\n\n".join(parts) if parts else None


@dataclass(frozen=True)
class ModelDefaults:
    """What a model's Modelfile layers contribute to every request."""

    params: dict[str, Any] = field(default_factory=dict)
    system: str | None = None
    template: str | None = None
    messages: tuple[ChatMessage, ...] = ()
    license: tuple[str, ...] = ()
    #: Knowledge documents (name, text) from FILE instructions, added to the system context.
    documents: tuple[tuple[str, str], ...] = ()


class Engine:
    """Resolves names, reads model defaults and loads models through their backend."""

    def __init__(self, store: ModelStore, backends: BackendRegistry | None = None,
                 preference: Sequence[str] = DEFAULT_PREFERENCE) -> None:
        self.store = store
        self.backends = backends or BackendRegistry()
        #: Device classes in order of preference when none is requested (npu > gpu > cpu).
        self.preference = tuple(preference)

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
            documents = tuple((d["name"], d["text"]) for d in map(json.loads, self._layer_text(manifest, "file")))
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidModelFile(f"model '{manifest.ref}' has a damaged layer: {exc}",
                                   "run 'slmctl verify' or create the model again") from exc
        systems = self._layer_text(manifest, "system")
        templates = self._layer_text(manifest, "template")
        return ModelDefaults(params=params, system=systems[-1] if systems else None,
                             template=templates[-1] if templates else None, messages=messages,
                             license=tuple(self._layer_text(manifest, "license")), documents=documents)

    def load_options_for(self, manifest: Manifest, options: LoadOptions) -> LoadOptions:
        """Cap the context at what the model was trained for (0 = the model's own)."""
        trained = manifest.details.context_length
        num_ctx = options.num_ctx
        if trained:
            num_ctx = trained if num_ctx == 0 else min(num_ctx, trained)
        return options.model_copy(update={"num_ctx": num_ctx})

    def devices(self, fmt: str) -> list[str]:
        """The devices (GGUF) or execution providers (ONNX) usable here for ``fmt``."""
        return self.backends.get(fmt).devices()

    def choose_device(self, manifest: Manifest, requested: str | None) -> str:
        """The concrete device a model runs on: ``requested`` (a class or a name) or the best usable."""
        return select_device(manifest.format, requested, self.devices(manifest.format), preference=self.preference)

    def load(self, manifest: Manifest, options: LoadOptions, *, device: str | None = None,
             embedding: bool = False, provider_options: Mapping[str, str] | None = None) -> LoadedModel:
        """Load ``manifest``'s model with ``options`` (already merged) on ``device`` (None = best)."""
        backend = self.backends.get(manifest.format)
        chosen = self.choose_device(manifest, device)
        adapters = [self.store.blob_path(layer.digest) for layer in manifest.layers if layer.kind == "adapter"]
        return backend.load(self.store.model_path(manifest), self.load_options_for(manifest, options),
                            device=chosen, embedding=embedding, provider_options=provider_options,
                            adapters=adapters)

    def embed(self, manifest: Manifest, texts: list[str], options: LoadOptions, *,
              device: str | None = None) -> list[list[float]]:
        """One normalised vector per text, from an embedding-capable model."""
        with self.load(manifest, options, device=device, embedding=True) as model:
            return model.embed(texts)
