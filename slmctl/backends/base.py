"""The backend interface and the typed data that crosses it.

A backend turns a materialized model path plus :class:`LoadOptions` into a :class:`LoadedModel`;
a loaded model generates from a prompt or chat messages, yielding text chunks through a
:class:`Generation` iterator that ends with :class:`Stats`. Backends never read settings, the
environment or the store: everything they need arrives here, typed.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from slmctl.options import LoadOptions, SamplingOptions
from slmctl.structured.schema import check_json_format

DoneReason = Literal["stop", "length", "cancel"]
Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str
    #: Tool calls an assistant message made: ``{"id": ..., "type": "function", "function": {"name": ...,
    #: "arguments": {...}}}`` each (``id`` and ``type`` may be absent; arguments are a JSON object).
    tool_calls: tuple[dict[str, Any], ...] | None = None
    #: On a ``tool`` message: the call it answers, and the function's name.
    tool_call_id: str | None = None
    name: str | None = None

    def template_dict(self) -> dict[str, Any]:
        """The message as Hugging Face chat templates read it (only the fields that are set)."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [{"type": "function", **call} for call in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            out["name"] = self.name
        return out


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token with its log-probability and the most likely alternatives at its place."""

    token: str
    logprob: float
    bytes: tuple[int, ...]
    #: ``(token, logprob, bytes)`` of the most likely tokens, best first.
    top: tuple[tuple[str, float, tuple[int, ...]], ...] = ()


class Chunk(str):
    """A piece of generated text; ``logprobs`` holds its tokens' log-probabilities when they were asked
    for (a ``str``, so every consumer that only wants text can ignore them)."""

    logprobs: tuple[TokenLogprob, ...]

    def __new__(cls, text: str, logprobs: tuple[TokenLogprob, ...] = ()) -> "Chunk":
        chunk = super().__new__(cls, text)
        chunk.logprobs = logprobs
        return chunk

    def __reduce__(self) -> tuple[Any, ...]:
        return (Chunk, (str(self), self.logprobs))


def fallback_prompt(messages: tuple[ChatMessage, ...]) -> str:
    """A plain prompt for models that ship no chat template."""
    if len(messages) == 1 and messages[0].role == "user":
        return messages[0].content
    return "\n".join(f"{m.role.capitalize()}: {m.content}" for m in messages) + "\nAssistant:"


def known_token_ids(tokens: Sequence[int], vocab_size: int) -> list[int]:
    """``tokens`` as a list, or a UsageError naming the first id outside the vocabulary (the runtimes
    abort, overflow or read out of bounds on one)."""
    bad = next((t for t in tokens if not 0 <= t < vocab_size), None)
    if bad is not None:
        from slmctl.errors import UsageError

        raise UsageError(f"token id {bad} is outside the model's vocabulary (0..{vocab_size - 1})",
                         "send token ids the model's tokenizer produced")
    return list(tokens)


@dataclass(frozen=True)
class GenerateRequest:
    """One generation from a raw ``prompt``, chat ``messages`` (rendered by the model's template), or
    exact prompt ``tokens`` (benchmarks)."""

    options: SamplingOptions = field(default_factory=SamplingOptions)
    prompt: str | None = None
    messages: tuple[ChatMessage, ...] | None = None
    tokens: tuple[int, ...] | None = None
    #: ``None``; ``"json"`` for any JSON value; or a JSON schema (dict) the output must follow.
    json_format: str | dict[str, Any] | None = None
    #: Keep generating through end-of-sequence tokens (benchmarks need exact token counts).
    ignore_eos: bool = False
    #: Function tools offered to the model, rendered by its own chat template (``messages`` only).
    tools: tuple[dict[str, Any], ...] | None = None
    #: ``None``: no log-probabilities; ``k`` >= 0: each chunk carries its tokens' log-probabilities
    #: with the ``k`` most likely alternatives (a :class:`Chunk`).
    logprobs: int | None = None

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.prompt, self.messages, self.tokens)) != 1:
            raise ValueError("GenerateRequest needs exactly one of prompt, messages or tokens")
        check_json_format(self.json_format)


@dataclass
class Stats:
    """Timings of one generation, in nanoseconds (as Ollama's API)."""

    load_duration: int = 0
    prompt_eval_count: int = 0
    prompt_eval_duration: int = 0
    eval_count: int = 0
    eval_duration: int = 0
    time_to_first_token: int = 0
    total_duration: int = 0
    done_reason: DoneReason = "stop"
    #: Prompt tokens whose KV entries were reused from an earlier request (prefix cache hits).
    prompt_cached_count: int = 0

    @staticmethod
    def rate(count: int, duration_ns: int) -> float:
        """Tokens per second; 0 when nothing was measured."""
        return count / (duration_ns / 1e9) if duration_ns > 0 else 0.0

    @property
    def prompt_eval_rate(self) -> float:
        return self.rate(self.prompt_eval_count, self.prompt_eval_duration)

    @property
    def eval_rate(self) -> float:
        return self.rate(self.eval_count, self.eval_duration)


@dataclass(frozen=True)
class LoadedInfo:
    """What a backend reports about a loaded model."""

    backend: str
    device: str
    context_length: int
    load_duration: int
    chat_template: str | None = None


#: The body of a generation: ``(stats, cancel_event) -> Iterator[text chunk]``; it fills ``stats``.
RunFn = Callable[[Stats, threading.Event], Iterator[str]]


class Generation:
    """An iterator of text chunks; ``stats`` and ``text`` are set once iteration has finished.

    ``cancel()`` may be called from another thread: the generation stops at the next token with
    ``done_reason == "cancel"``. Closing the iterator early also stops it cleanly and frees the model.
    ``cancel`` may be shared with whoever produces the chunks (a runner's worker); ``on_cancel``
    callbacks tell producers that cannot watch it (a runner process) at once.
    """

    def __init__(self, run: RunFn, cancel: threading.Event | None = None, *, submitted_ns: int | None = None) -> None:
        self._run = run
        #: When the request was handed over (total_duration counts from there; default: first read).
        self._submitted_ns = submitted_ns
        self._cancel = cancel or threading.Event()
        self.on_cancel: list[Callable[[], None]] = []
        self._iter: Iterator[str] | None = None
        self._parts: list[str] = []
        self.stats: Stats | None = None
        #: The error that ended the generation, if one did.
        self.error: BaseException | None = None
        #: Called with this generation once it has finished (normally, by error or cancelled).
        self.on_finish: list[Callable[[Generation], None]] = []

    def cancel(self) -> None:
        if not self._cancel.is_set():
            self._cancel.set()
            for callback in self.on_cancel:
                callback()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def text(self) -> str:
        """The text generated so far."""
        return "".join(self._parts)

    def __iter__(self) -> Iterator[str]:
        if self._iter is None:
            self._iter = self._drive()
        return self._iter

    def close(self) -> None:
        """Stop early (as when the consumer goes away)."""
        if self._iter is not None:
            self._iter.close()  # type: ignore[attr-defined]

    def _drive(self) -> Iterator[str]:
        stats = Stats()
        start = self._submitted_ns or time.perf_counter_ns()
        try:
            for chunk in self._run(stats, self._cancel):
                self._parts.append(chunk)
                yield chunk
        except (KeyboardInterrupt, GeneratorExit):
            self.cancel()  # stopped by Ctrl-C or by a consumer that went away
            raise
        except Exception as error:
            self.error = error
            raise
        finally:
            stats.total_duration = time.perf_counter_ns() - start
            if self._cancel.is_set():
                stats.done_reason = "cancel"
            self.stats = stats
            for callback in self.on_finish:
                callback(self)

    def complete(self) -> str:
        """Consume the whole generation and return its text."""
        for _ in self:
            pass
        return self.text


class Sink(Protocol):
    """Where one generation's results go, as they are produced (from the thread producing them)."""

    def chunk(self, text: str) -> None: ...

    def done(self, stats: Stats) -> None: ...

    def fail(self, error: BaseException) -> None: ...


class Batch(ABC):
    """Several generations of one model decoded together, a step at a time, by one thread."""

    slots: int

    @property
    @abstractmethod
    def active(self) -> int:
        """Generations in progress."""

    @abstractmethod
    def free_slots(self) -> int:
        """How many more generations :meth:`add` can take now."""

    @abstractmethod
    def add(self, request: GenerateRequest, sink: Sink, cancel: threading.Event) -> None:
        """Start ``request``; its chunks, then its statistics or its error, go to ``sink`` during later
        steps. Raises (delivering nothing) when it cannot start: no free slot, a prompt over the context."""

    @abstractmethod
    def step(self) -> None:
        """Advance every generation by one token (or one prompt chunk); setting a generation's ``cancel``
        ends it at the next step."""

    @abstractmethod
    def fail_all(self, error: BaseException) -> None:
        """End every generation in progress with ``error``."""

    @abstractmethod
    def close(self) -> None:
        """Free the batch's memory (generations still running fail)."""


class LoadedModel(ABC):
    """A model held in memory by one backend. Safe to call from several threads."""

    info: LoadedInfo

    @abstractmethod
    def generate(self, request: GenerateRequest, cancel: threading.Event | None = None) -> Generation:
        """Start a generation; nothing runs until the result is iterated. Setting ``cancel`` (from any
        thread) stops it at the next token."""

    def prompt_text(self, request: GenerateRequest) -> str:
        """The exact text the model will read for ``request`` (chat template applied)."""
        return request.prompt or ""

    def prompt_tokens(self, request: GenerateRequest) -> list[int]:
        """The token ids the model will read for ``request`` (how much of the context it takes)."""
        if request.tokens is not None:
            return list(request.tokens)
        return self.tokenize(self.prompt_text(request), special=True)

    @abstractmethod
    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        """Token ids of ``text`` (no BOS added)."""

    @abstractmethod
    def detokenize(self, tokens: list[int]) -> str:
        """Text of ``tokens``."""

    @abstractmethod
    def embed(self, texts: list[str]) -> list[list[float]]:
        """One pooled, L2-normalised vector per text (needs a model loaded for embeddings)."""

    def unsupported(self, options: SamplingOptions) -> list[str]:
        """Warnings for options this runtime cannot honour (they are ignored, never silently)."""
        return []

    def batch(self, slots: int) -> Batch | None:
        """A :class:`Batch` decoding up to ``slots`` generations together, or None when this model
        generates one request at a time."""
        return None

    @abstractmethod
    def close(self) -> None:
        """Free the runtime's memory. The object is unusable afterwards."""

    def __enter__(self) -> "LoadedModel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Backend(ABC):
    """A runtime able to load one model format."""

    name: str
    format: str

    @abstractmethod
    def load(self, path: Path, options: LoadOptions, *, device: str = "cpu", embedding: bool = False,
             provider_options: Mapping[str, str] | None = None, adapters: Sequence[Path] = (),
             slots: int | None = None) -> LoadedModel:
        """Load the model at ``path`` (a file or a materialized folder) on ``device``.

        ``device`` is a concrete name from :meth:`devices` (``cpu``, ``cuda``, ``qnn``, ...);
        ``provider_options`` pass through to the runtime's device (e.g. ONNX provider options);
        ``adapters`` are LoRA files applied at load time; ``slots``: the model will generate through
        :meth:`LoadedModel.batch` with that many slots (a backend may then skip single-request state).
        """

    @abstractmethod
    def devices(self) -> list[str]:
        """The devices this backend can use on this machine (``cpu`` always included)."""
