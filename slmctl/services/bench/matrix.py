"""The benchmark matrix: comma lists from the command line, expanded into configurations.

``slmctl bench a b --threads 1,2 --gen-tokens 32,128`` is 2 models x 2 thread counts x 2 lengths = 8
configurations. An empty list means the default (one value). The order is deterministic: models in
the order given, then devices, threads, contexts, prompt lengths, generation lengths and numbers of
concurrent requests (``--concurrency 1,4,8``), each in the order given (duplicates dropped).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from itertools import product
from typing import TypeVar

from slmctl.errors import UsageError
from slmctl.services.bench.model import BenchConfig

T = TypeVar("T")

#: The formats (backends) a benchmark can run.
BACKENDS: tuple[str, ...] = ("gguf", "onnx")

#: Defaults of the matrix dimensions (``BenchConfig``'s own defaults).
DEFAULT_THREADS = 0          # the backend's default
DEFAULT_CTX = 0              # 4096 capped at the model's
DEFAULT_PROMPT_TOKENS = 64
DEFAULT_GEN_TOKENS = 32
DEFAULT_CONCURRENCY = 1      # one request at a time
#: The most concurrent requests a configuration may have (a GGUF batch holds N x context tokens of KV cache).
MAX_CONCURRENCY = 256

_TYPE_WORDS = {int: "an integer", float: "a number", str: "a word"}


def _unique(values: Iterable[T]) -> list[T]:
    seen: list[T] = []
    for value in values:
        if value not in seen:
            seen.append(value)
    return seen


def parse_list(text: str | Sequence[str] | None, type: Callable[[str], T] = str,  # noqa: A002 - as the brief
               *, flag: str = "value", minimum: float | None = None, maximum: float | None = None) -> list[T]:
    """Parse a comma list (``"1,2"`` -> ``[1, 2]``); also a list of such strings (a repeated flag).

    ``None`` or an empty string is ``[]`` (the default). Blank items are skipped, duplicates dropped,
    strings lower-cased. A value that does not convert, or is below ``minimum`` or above ``maximum``, is
    a :class:`UsageError` naming ``flag``.
    """
    if text is None:
        return []
    parts = [text] if isinstance(text, str) else list(text)
    items = [item.strip() for part in parts for item in str(part).split(",") if item.strip()]
    values: list[T] = []
    for item in items:
        try:
            value = type(item.lower()) if type is str else type(item)
        except (TypeError, ValueError):
            what = _TYPE_WORDS.get(type, getattr(type, "__name__", "a value"))  # type: ignore[arg-type]
            raise UsageError(f"invalid {flag} value {item!r}: expected {what}",
                             f"give a comma-separated list, e.g. {flag} {_example(type)}") from None
        if minimum is not None and value < minimum:  # type: ignore[operator]
            raise UsageError(f"invalid {flag} value {item!r}: must be at least {minimum:g}")
        if maximum is not None and value > maximum:  # type: ignore[operator]
            raise UsageError(f"invalid {flag} value {item!r}: must be at most {maximum:g}")
        values.append(value)
    return _unique(values)


def _example(type_: Callable[[str], object]) -> str:
    return "1,2" if type_ in (int, float) else "a,b"


def expand(models: Sequence[tuple[str, str]], *, backends: Sequence[str] = (), devices: Sequence[str | None] = (),
           threads: Sequence[int] = (), ctxs: Sequence[int] = (), prompt_tokens: Sequence[int] = (),
           gen_tokens: Sequence[int] = (), concurrency: Sequence[int] = ()) -> list[BenchConfig]:
    """All configurations of the matrix, in a deterministic order.

    ``models`` are ``(name, format)`` pairs (the format from the model's manifest). ``backends``
    keeps only the models of those formats; a requested backend that matches none of the models is a
    :class:`UsageError`. ``devices`` are device classes or names (``cpu``, ``gpu``, ``cuda``; ``auto``
    = the best usable); every other dimension is a list of numbers. Empty lists mean the default.
    ``concurrency`` lists numbers of requests generating at once (1 to :data:`MAX_CONCURRENCY`).
    """
    if not models:
        raise UsageError("no model to benchmark", "give at least one MODEL")
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise UsageError(f"unknown backend {unknown[0]!r}", f"valid backends: {', '.join(BACKENDS)}")
    pairs = _unique((name, fmt) for name, fmt in models)
    if backends:
        formats = {fmt for _, fmt in pairs}
        for backend in backends:
            if backend not in formats:
                names = ", ".join(f"{name} ({fmt})" for name, fmt in pairs)
                raise UsageError(f"no {backend} model among the models given: {names}",
                                 f"give a {backend} model too, or drop {backend} from --backend")
        pairs = [(name, fmt) for name, fmt in pairs if fmt in backends]
    for flag, values, least in (("--threads", threads, 0), ("--ctx", ctxs, 0), ("--prompt-tokens", prompt_tokens, 1),
                                ("--gen-tokens", gen_tokens, 1), ("--concurrency", concurrency, 1)):
        for value in values:
            if value < least:
                raise UsageError(f"invalid {flag} value {value!r}: must be at least {least}")
    for value in concurrency:
        if value > MAX_CONCURRENCY:
            raise UsageError(f"invalid --concurrency value {value!r}: must be at most {MAX_CONCURRENCY}")
    device_list = _unique(None if d in (None, "", "auto") else d for d in devices) or [None]
    dimensions = product(device_list, _unique(threads) or [DEFAULT_THREADS], _unique(ctxs) or [DEFAULT_CTX],
                         _unique(prompt_tokens) or [DEFAULT_PROMPT_TOKENS], _unique(gen_tokens) or [DEFAULT_GEN_TOKENS],
                         _unique(concurrency) or [DEFAULT_CONCURRENCY])
    cells = list(dimensions)
    configs = []
    for name, fmt in pairs:
        for device, n_threads, ctx, n_prompt, n_gen, n_requests in cells:
            if ctx and n_prompt + n_gen > ctx:
                raise UsageError(f"--ctx {ctx} cannot hold {n_prompt} prompt + {n_gen} generated tokens",
                                 "raise --ctx or lower --prompt-tokens/--gen-tokens")
            configs.append(BenchConfig.model_validate({
                "model": name, "format": fmt, "device": device, "threads": n_threads, "ctx": ctx,
                "prompt_tokens": n_prompt, "gen_tokens": n_gen, "concurrency": n_requests}))
    return configs


def label(config: BenchConfig, device: str | None = None) -> str:
    """A short human name of a configuration: ``tiny gguf cpu t2 p64 g32`` (``device``: the one used);
    ``... g32 n4`` for 4 concurrent requests."""
    parts = [config.model, config.format, device or config.device or "auto"]
    if config.threads:
        parts.append(f"t{config.threads}")
    if config.ctx:
        parts.append(f"c{config.ctx}")
    parts += [f"p{config.prompt_tokens}", f"g{config.gen_tokens}"]
    if config.concurrency > 1:
        parts.append(f"n{config.concurrency}")
    return " ".join(parts)
