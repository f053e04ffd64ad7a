"""A chat session: a model on the scheduler, its option layers, a system prompt and the conversation.

``run`` uses it for a single prompt and for the interactive REPL; the server's chat and generate
endpoints build their requests with :func:`build_request`, the same way. Option layers merge in this
order: built-in defaults < the model's PARAMETER layer < the session's own settings (``--param``,
``--max-tokens``, ``/set parameter``). Changing a load-time option reloads the model before the next
answer. The session is a client of a :class:`~slmctl.engine.Scheduler`: its own (in process, the model
kept until the session closes) unless one is handed in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from slmctl.backends.base import ChatMessage, GenerateRequest, Generation
from slmctl.engine import Engine, LoadPlan, ModelDefaults, Scheduler, SchedulerSettings, compose_system
from slmctl.engine.runner import Runner
from slmctl.errors import ContextOverflow
from slmctl.options import LoadOptions, SamplingOptions, add_value, build_options, canonical_key
from slmctl.store import Manifest
from slmctl.structured.answer import format_problem


def build_request(defaults: ModelDefaults, messages: Sequence[ChatMessage], sampling: SamplingOptions, *,
                  json_format: str | dict[str, Any] | None = None, template: str | None = None,
                  tools: Sequence[dict[str, Any]] | None = None, logprobs: int | None = None) -> GenerateRequest:
    """The request for a whole conversation (system messages included): rendered with the Modelfile's
    TEMPLATE (or ``template``) when there is one, else handed to the model's own chat template (with
    ``tools``, its ``tools`` variable)."""
    template = template if template is not None else defaults.template
    if template is not None:
        from slmctl.modelfile.prompting import render_messages

        text = render_messages(template, messages, tools=list(tools) if tools else None)
        return GenerateRequest(sampling, prompt=text, json_format=json_format, logprobs=logprobs)
    return GenerateRequest(sampling, messages=tuple(messages), json_format=json_format,
                           tools=tuple(tools) if tools else None, logprobs=logprobs)


def fit_conversation(messages: Sequence[ChatMessage], count: Callable[[list[ChatMessage]], int],
                     context: int | None, keep_head: int | None = None) -> tuple[list[ChatMessage], int]:
    """Drop the oldest turns until ``count(messages) < context`` (as Ollama does): the first ``keep_head``
    messages (default: the leading system messages) and the last message always stay. Returns the kept
    messages and their token count (still >= ``context`` when even the shortest conversation does not
    fit). ``context`` None: nothing is cut."""
    kept = list(messages)
    size = count(kept)
    if context is None or size < context:
        return kept, size
    head = 0
    while head < len(kept) - 1 and kept[head].role == "system":
        head += 1
    head = min(keep_head, len(kept) - 1) if keep_head is not None else head
    while size >= context and len(kept) - head > 1:
        del kept[head]
        while len(kept) - head > 1 and kept[head].role != "user":
            del kept[head]  # a turn starts with the user: never leave an answer without its question
        size = count(kept)
    return kept, size


def in_process_scheduler() -> Scheduler:
    """A scheduler for one CLI command: models load here and stay until it closes."""
    return Scheduler(SchedulerSettings(keep_alive=None, max_loaded=1, check_memory=False))


class ChatSession:
    """Conversation state plus the model that answers it."""

    def __init__(self, engine: Engine, manifest: Manifest, *, params: dict[str, Any] | None = None,
                 system: str | None = None, json_format: str | dict[str, Any] | None = None,
                 device: str | None = None, provider_options: dict[str, str] | None = None,
                 scheduler: Scheduler | None = None) -> None:
        self.engine = engine
        self.scheduler = scheduler or in_process_scheduler()
        self._owns_scheduler = scheduler is None
        self.manifest = manifest
        self.defaults: ModelDefaults = engine.defaults(manifest)
        self.params: dict[str, Any] = dict(params or {})
        self.system = system if system is not None else self.defaults.system
        self.json_format = json_format
        self.device = device
        self.provider_options = dict(provider_options or {})
        self.history: list[ChatMessage] = list(self.defaults.messages)
        self._runner: Runner | None = None
        self._plan: LoadPlan | None = None
        self._pending_load_ns = 0
        #: Older messages left out of the last request to fit the context (0: none).
        self.dropped = 0
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
    def ensure_loaded(self) -> Runner:
        """Load the model, or reload it when a load-time option changed."""
        load, _ = self.options()
        plan = self.engine.plan(self.manifest, load, device=self.device, provider_options=self.provider_options)
        if self._runner is not None and self._runner.alive and self._plan == plan:
            return self._runner
        self.close()
        runner = self.scheduler.runner(plan)
        runner.release()
        self._runner, self._plan = runner, plan
        self._pending_load_ns = runner.info.load_duration
        return runner

    @property
    def model(self) -> Runner | None:
        """The runner holding the model (None before the first load)."""
        return self._runner

    def close(self) -> None:
        if self._runner is not None and self._owns_scheduler:
            self.scheduler.unload(str(self.manifest.ref))
        self._runner = None

    def warnings(self) -> list[str]:
        """Options set for this session that the loaded runtime cannot honour (they are ignored)."""
        return self.ensure_loaded().unsupported(self.options()[1])

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
        return build_request(self.defaults, self.messages_for(prompt), sampling, json_format=self.json_format)

    def prompt_preview(self, prompt: str) -> str:
        """The text the model would read for ``prompt`` now (for --debug)."""
        return self.ensure_loaded().prompt_text(self.request_for(prompt))

    def fitted_request(self, prompt: str) -> GenerateRequest:
        """The request for ``prompt``, leaving out the oldest turns when the conversation outgrew the
        context (the system prompt, the model's MESSAGE replay and the new message always stay)."""
        runner = self.ensure_loaded()
        _, sampling = self.options()
        messages = list(self.messages_for(prompt))

        def make(kept: list[ChatMessage]) -> GenerateRequest:
            return build_request(self.defaults, kept, sampling, json_format=self.json_format)

        context = runner.info.context_length
        head = (1 if self.system_context else 0) + len(self.defaults.messages)
        kept, size = fit_conversation(messages, lambda c: len(runner.call("prompt_tokens", make(c))), context, head)
        if size >= context:
            raise ContextOverflow(f"the prompt is {size} tokens but the context holds {context}",
                                  "shorten the message or raise the context: --param num_ctx=N (/set parameter "
                                  "num_ctx N in a chat)")
        self.dropped = len(messages) - len(kept)
        return make(kept)

    def ask(self, prompt: str) -> Generation:
        """Start the answer to ``prompt``; the exchange joins the history once it has finished well.
        ``dropped`` then says how many older messages did not fit in the context this time."""
        request = self.fitted_request(prompt)
        assert self._plan is not None
        generation = self.scheduler.generate(self._plan, request)
        load_ns, self._pending_load_ns = self._pending_load_ns, 0

        def finished(gen: Generation) -> None:
            if gen.stats is not None:
                gen.stats.load_duration = load_ns
                gen.stats.total_duration += load_ns
                if gen.stats.done_reason != "cancel" and gen.error is None:
                    self.history += [ChatMessage("user", prompt), ChatMessage("assistant", gen.text)]

        generation.on_finish.append(finished)
        return generation

    def format_problem(self, generation: Generation) -> str | None:
        """Why ``generation`` (finished) is not the JSON :attr:`json_format` asked for; None when it is or
        when no format was asked for (:func:`~slmctl.structured.answer.format_problem`)."""
        stats = generation.stats
        return format_problem(self.json_format, generation.text, stats.done_reason if stats else None,
                              stats.eval_count if stats else 0, num_predict=self.options()[1].num_predict)

    def clear(self) -> None:
        """Forget the conversation (the model's own MESSAGE layers come back)."""
        self.history = list(self.defaults.messages)

    def __enter__(self) -> ChatSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        if self._owns_scheduler:
            self.scheduler.close()
