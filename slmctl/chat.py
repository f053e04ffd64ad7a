"""A chat session: one loaded model, its option layers, a system prompt and the conversation so far.

``run`` uses it for a single prompt and for the interactive REPL (later, the server's chat endpoint
uses the engine the same way). Option layers merge in this order: built-in defaults < the model's
PARAMETER layer < the session's own settings (``--param``, ``--max-tokens``, ``/set parameter``).
Changing a load-time option reloads the model before the next answer.
"""

from __future__ import annotations

from typing import Any

from slmctl.backends.base import ChatMessage, GenerateRequest, Generation, LoadedModel
from slmctl.engine import Engine, ModelDefaults, compose_system
from slmctl.options import LoadOptions, SamplingOptions, add_value, build_options, canonical_key
from slmctl.store import Manifest


class ChatSession:
    """Conversation state plus the model that answers it."""

    def __init__(self, engine: Engine, manifest: Manifest, *, params: dict[str, Any] | None = None,
                 system: str | None = None, json_format: str | dict[str, Any] | None = None,
                 device: str | None = None, provider_options: dict[str, str] | None = None) -> None:
        self.engine = engine
        self.manifest = manifest
        self.defaults: ModelDefaults = engine.defaults(manifest)
        self.params: dict[str, Any] = dict(params or {})
        self.system = system if system is not None else self.defaults.system
        self.json_format = json_format
        self.device = device
        self.provider_options = dict(provider_options or {})
        self.history: list[ChatMessage] = list(self.defaults.messages)
        self._model: LoadedModel | None = None
        self._loaded_with: LoadOptions | None = None
        self._pending_load_ns = 0
        self.options()  # validate the option layers before any loading

    # -- options -------------------------------------------------------------------------------
    def options(self) -> tuple[LoadOptions, SamplingOptions]:
        return build_options(self.defaults.params, self.params)

    def set_parameter(self, key: str, raw: Any) -> str:
        """Set one option for the rest of the session (validated; replaces an earlier value, ``stop``
        included; returns the canonical name)."""
        trial = dict(self.params)
        trial.pop(canonical_key(key), None)
        name = add_value(trial, key, raw)
        build_options(self.defaults.params, trial)
        self.params = trial
        return name

    # -- model ---------------------------------------------------------------------------------
    def ensure_loaded(self) -> LoadedModel:
        """Load the model, or reload it when a load-time option changed."""
        load, _ = self.options()
        if self._model is not None and self._loaded_with == load:
            return self._model
        self.close()
        self._model = self.engine.load(self.manifest, load, device=self.device,
                                       provider_options=self.provider_options)
        self._loaded_with = load
        self._pending_load_ns = self._model.info.load_duration
        return self._model

    @property
    def model(self) -> LoadedModel | None:
        return self._model

    def close(self) -> None:
        if self._model is not None:
            self._model.close()
            self._model = None

    def warnings(self) -> list[str]:
        """Options set for this session that the loaded runtime cannot honour (they are ignored)."""
        model = self.ensure_loaded()
        return model.unsupported(self.options()[1])

    # -- conversation --------------------------------------------------------------------------
    @property
    def system_context(self) -> str | None:
        """The system prompt plus the model's knowledge documents."""
        return compose_system(self.system, self.defaults.documents)

    def messages_for(self, prompt: str) -> tuple[ChatMessage, ...]:
        context = self.system_context
        system = (ChatMessage("system", context),) if context else ()
        return (*system, *self.history, ChatMessage("user", prompt))

    def request_for(self, prompt: str) -> GenerateRequest:
        """The request for ``prompt``: chat messages, or a raw prompt built with the model's TEMPLATE."""
        _, sampling = self.options()
        if self.defaults.template is not None:
            from slmctl.modelfile.prompting import render_prompt

            text = render_prompt(self.defaults.template, self.system_context, self.history, prompt)
            return GenerateRequest(sampling, prompt=text, json_format=self.json_format)
        return GenerateRequest(sampling, messages=self.messages_for(prompt), json_format=self.json_format)

    def prompt_preview(self, prompt: str) -> str:
        """The text the model would read for ``prompt`` now (for --debug)."""
        return self.ensure_loaded().prompt_text(self.request_for(prompt))

    def ask(self, prompt: str) -> Generation:
        """Start the answer to ``prompt``; the exchange joins the history once it has finished."""
        model = self.ensure_loaded()
        request = self.request_for(prompt)
        generation = model.generate(request)
        load_ns, self._pending_load_ns = self._pending_load_ns, 0

        def finished(gen: Generation) -> None:
            if gen.stats is not None:
                gen.stats.load_duration = load_ns
                gen.stats.total_duration += load_ns
                if gen.stats.done_reason != "cancel":
                    self.history += [ChatMessage("user", prompt), ChatMessage("assistant", gen.text)]

        generation.on_finish.append(finished)
        return generation

    def clear(self) -> None:
        """Forget the conversation (the model's own MESSAGE layers come back)."""
        self.history = list(self.defaults.messages)

    def __enter__(self) -> ChatSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
