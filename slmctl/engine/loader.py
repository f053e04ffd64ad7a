"""The loader: from a stored model to a load plan, and from a plan to a loaded runtime model.

It reads a manifest's Modelfile layers (parameters, system prompt, messages), caps the context at what
the model was trained for, chooses the device (a requested one, or the best usable one in the order of
preference) and resolves all of it into a :class:`LoadPlan`: plain, picklable data that a runner loads
in this process (``run``) or in a runner process (``serve``) through the backend for the model's format.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slmctl.backends.base import ChatMessage, LoadedModel
from slmctl.backends.registry import BackendRegistry
from slmctl.devices import DEFAULT_PREFERENCE, select_device
from slmctl.names import parse_model_ref
from slmctl.options import LoadOptions, capped_context
from slmctl.store import Manifest, ModelStore
from slmctl.store.layers import TEXT_KINDS, LayerValues, damaged_layer, decode_layers

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

    @classmethod
    def from_layers(cls, values: LayerValues) -> ModelDefaults:
        """The defaults that decoded layers (:func:`slmctl.store.layers.decode_layers`) give."""
        return cls(params=values.params, system=values.system, template=values.template,
                   messages=tuple(ChatMessage(role, content) for role, content in values.messages),
                   license=values.licenses, documents=values.documents)


@dataclass(frozen=True)
class LoadPlan:
    """Everything needed to load one model, resolved: it crosses into a runner process as it is."""

    model: str
    digest: str
    format: str
    path: Path
    options: LoadOptions
    device: str
    embedding: bool = False
    provider_options: tuple[tuple[str, str], ...] = ()
    adapters: tuple[Path, ...] = ()
    #: Bytes the model's files take (what loading it will roughly cost in memory).
    size: int = 0

    @property
    def key(self) -> tuple[str, str, str, bool, tuple[tuple[str, str], ...]]:
        """Two requests share a loaded model exactly when their keys are equal."""
        return (self.digest, self.options.model_dump_json(), self.device, self.embedding, self.provider_options)


def load_plan(plan: LoadPlan, backends: BackendRegistry | None = None, *, slots: int | None = None) -> LoadedModel:
    """Load ``plan`` through the backend of its format, in this process (``slots``: for a runner that
    will decode that many generations together)."""
    backend = (backends or BackendRegistry()).get(plan.format)
    return backend.load(plan.path, plan.options, device=plan.device, embedding=plan.embedding,
                        provider_options=dict(plan.provider_options) or None, adapters=list(plan.adapters),
                        slots=slots)


_RUNTIME_MODULES = {"gguf": "llama_cpp", "onnx": "onnxruntime_genai"}


def _import_runtime(fmt: str) -> None:
    from importlib import import_module

    from slmctl.backends.probes import loaded_here

    other = "onnx" if fmt == "gguf" else "gguf"
    if fmt in _RUNTIME_MODULES and not loaded_here(other):
        try:
            import_module(_RUNTIME_MODULES[fmt])
        except ImportError:
            pass  # the probe reports it


class Engine:
    """Resolves names, reads model defaults and loads models through their backend."""

    def __init__(self, store: ModelStore, backends: BackendRegistry | None = None,
                 preference: Sequence[str] = DEFAULT_PREFERENCE, *, runtime_here: bool = False) -> None:
        self.store = store
        #: The caller loads models in this process (``run``): import a format's runtime before probing
        #: its devices, so the probe runs here instead of in a child (never when the other runtime is
        #: already loaded: the two native stacks must not meet). ``serve`` leaves it off.
        self.runtime_here = runtime_here
        self.backends = backends or BackendRegistry()
        #: Device classes in order of preference when none is requested (npu > gpu > cpu).
        self.preference = tuple(preference)

    def manifest(self, name: str) -> Manifest:
        """The stored manifest for a local model name (raises ModelNotFound)."""
        return self.store.get(parse_model_ref(name))

    def _layer_text(self, manifest: Manifest, kind: str) -> list[str]:
        """The texts of ``manifest``'s layers of ``kind``, in manifest order (UnicodeDecodeError: damaged)."""
        return [self.store.blob_path(layer.digest).read_text(encoding="utf-8")
                for layer in manifest.layers if layer.kind == kind]

    def defaults(self, manifest: Manifest) -> ModelDefaults:
        """Parameters, system prompt, template, messages, licenses and documents stored with the model."""
        try:
            texts = {kind: self._layer_text(manifest, kind) for kind in TEXT_KINDS}
        except UnicodeDecodeError as exc:
            raise damaged_layer(str(manifest.ref), exc) from exc
        return ModelDefaults.from_layers(decode_layers(texts, model=str(manifest.ref)))

    def load_options_for(self, manifest: Manifest, options: LoadOptions) -> LoadOptions:
        """Cap the context at what the model was trained for (0 = the model's own)."""
        return options.model_copy(update={"num_ctx": capped_context(options.num_ctx, manifest.details.context_length)})

    def devices(self, fmt: str) -> list[str]:
        """The devices (GGUF) or execution providers (ONNX) usable here for ``fmt``."""
        if self.runtime_here:
            _import_runtime(fmt)
        return self.backends.get(fmt).devices()

    def choose_device(self, manifest: Manifest, requested: str | None) -> str:
        """The concrete device a model runs on: ``requested`` (a class or a name) or the best usable."""
        return select_device(manifest.format, requested, self.devices(manifest.format), preference=self.preference)

    def plan(self, manifest: Manifest, options: LoadOptions, *, device: str | None = None,
             embedding: bool = False, provider_options: Mapping[str, str] | None = None) -> LoadPlan:
        """Resolve how ``manifest``'s model loads: capped options, a concrete device, files, adapters."""
        chosen = self.choose_device(manifest, device)
        adapters = tuple(self.store.blob_path(layer.digest) for layer in manifest.layers if layer.kind == "adapter")
        return LoadPlan(model=str(manifest.ref), digest=manifest.digest(), format=manifest.format,
                        path=self.store.model_path(manifest), options=self.load_options_for(manifest, options),
                        device=chosen, embedding=embedding,
                        provider_options=tuple(sorted((provider_options or {}).items())), adapters=adapters,
                        size=manifest.total_size)

    def load(self, manifest: Manifest, options: LoadOptions, *, device: str | None = None,
             embedding: bool = False, provider_options: Mapping[str, str] | None = None) -> LoadedModel:
        """Load ``manifest``'s model with ``options`` (already merged) on ``device`` (None = best), here."""
        plan = self.plan(manifest, options, device=device, embedding=embedding, provider_options=provider_options)
        return load_plan(plan, self.backends)

    def embed(self, manifest: Manifest, texts: list[str], options: LoadOptions, *,
              device: str | None = None) -> list[list[float]]:
        """One normalised vector per text, from an embedding-capable model (loaded here, then freed)."""
        from slmctl.engine.runner import ThreadRunner

        runner = ThreadRunner(self.load(manifest, options, device=device, embedding=True), name=str(manifest.ref))
        try:
            return runner.embed(texts)
        finally:
            runner.close()
