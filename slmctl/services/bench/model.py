"""The data of a benchmark: what to run (configurations), what one run measured (samples), and the
summary of a configuration. Shared by the runner, the statistics, the reporters and the regression gate.

Times are milliseconds, rates tokens per second, memory bytes. A result document (``BenchDocument``)
is what ``--json`` prints, ``--output`` writes, the history keeps and ``--baseline`` reads back.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

SCHEMA_VERSION = 1

#: Figures reported per configuration, and whether a higher value is better.
FIGURES: dict[str, bool] = {
    "gen_tps": True,        # generation tokens/s
    "prompt_tps": True,     # prompt processing tokens/s
    "ttft_ms": False,       # time to first token
    "load_ms": False,       # model load time
    "peak_rss": False,      # peak resident memory of the process during the run
}

#: Figures only a configuration of several concurrent requests has (``--concurrency N``, N > 1). There
#: ``ttft_ms`` is the median (p50) time to first token across the requests, ``gen_tps`` and
#: ``prompt_tps`` are per-stream rates (the median request's).
CONCURRENCY_FIGURES: dict[str, bool] = {
    "agg_tps": True,        # all streams' generated tokens / wall time of the concurrent phase
    "ttft_p95_ms": False,   # 95th percentile of the time to first token across the requests
}

#: Every figure a configuration can have, and whether a higher value is better (the gate's directions).
ALL_FIGURES: dict[str, bool] = {**FIGURES, **CONCURRENCY_FIGURES}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _OmitsDefaults(_Strict):
    """Leaves the fields named in ``omitted_defaults`` out of its serialization while they hold their default, so a
    document without concurrent runs reads exactly as before ``--concurrency`` existed."""

    omitted_defaults: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        for name in self.omitted_defaults:
            if name in data and getattr(self, name) == type(self).model_fields[name].default:
                del data[name]
        return data


class BenchConfig(_OmitsDefaults):
    """One cell of the matrix: a model on a backend/device with fixed sizes and a number of concurrent
    requests (1: one request at a time, the key and serialization as before ``--concurrency``)."""

    omitted_defaults: ClassVar[tuple[str, ...]] = ("concurrency",)

    model: str                      # the model name as given (name[:tag])
    format: Literal["gguf", "onnx"]
    device: str | None = None       # requested device (None = best); the device used is in the samples
    threads: int = 0                # 0 = the backend's default
    ctx: int = 0                    # context size; 0 = the default (4096 capped at the model's)
    prompt_tokens: int = 64
    gen_tokens: int = 32
    concurrency: int = Field(1, ge=1)  # requests generating at once (N > 1: one model loaded with N slots)

    @property
    def key(self) -> str:
        """A stable identifier, used to match configurations against a baseline (``|n4`` only for N > 1,
        so the key of a single-request configuration matches baselines older than ``--concurrency``)."""
        requests = f"|n{self.concurrency}" if self.concurrency > 1 else ""
        return (f"{self.model}|{self.format}|{self.device or 'auto'}|t{self.threads}|c{self.ctx}"
                f"|p{self.prompt_tokens}|g{self.gen_tokens}{requests}")


class StreamSample(_Strict):
    """One request of a concurrent sample. Times are milliseconds from the start of the concurrent phase
    (the first submission); ``ttft_ms`` = ``first_token_ms - submitted_ms``, as its client saw it."""

    submitted_ms: float
    first_token_ms: float
    done_ms: float
    ttft_ms: float
    prompt_tokens: int
    prompt_cached: int              # prompt tokens reused from the runtime's prefix cache
    gen_tokens: int
    gen_ms: float                   # first token to last token
    gen_tps: float


class Sample(_OmitsDefaults):
    """What one repetition of one configuration measured (exact token counts included).

    A concurrent sample (N > 1 requests at once) also has the fields after ``peak_gpu_memory``; its
    ``ttft_ms`` is the median across the requests, ``prompt_*`` and ``gen_*`` those of the median
    request (per-stream rates), ``load_ms`` includes making the N-slot batch context.
    """

    omitted_defaults: ClassVar[tuple[str, ...]] = ("agg_tps", "ttft_p95_ms", "wall_ms", "peak_streams", "streams")

    config: str                     # BenchConfig.key
    repetition: int                 # 0-based, warm-up runs excluded
    device: str                     # the device the runtime really used
    load_ms: float
    ttft_ms: float
    prompt_tokens: int
    prompt_ms: float
    prompt_tps: float
    gen_tokens: int
    gen_ms: float
    gen_tps: float
    peak_rss: int
    peak_gpu_memory: int | None = None
    agg_tps: float | None = None            # all streams' generated tokens / wall_ms
    ttft_p95_ms: float | None = None
    wall_ms: float | None = None            # first submission to the last request's end
    peak_streams: int | None = None         # most requests generating at the same moment (1: they queued)
    streams: list[StreamSample] | None = None


class FigureStats(_Strict):
    median: float
    min: float
    max: float
    stdev: float
    n: int


class ConfigSummary(_Strict):
    config: BenchConfig
    key: str
    figures: dict[str, FigureStats]  # keys from FIGURES (and CONCURRENCY_FIGURES for N > 1)
    unstable: list[str] = Field(default_factory=list)  # figures whose spread is too wide to trust


class ModelInfo(_Strict):
    name: str
    digest: str
    format: str
    quantization: str | None = None
    parameter_size: str | None = None


class BenchDocument(_Strict):
    """One benchmark run: machine, versions, models, configurations, raw samples and summaries."""

    schema_version: int = SCHEMA_VERSION
    created_at: str                  # ISO 8601
    slmctl_version: str
    runtimes: dict[str, str | None]  # {"llama-cpp-python": "0.3.36", "onnxruntime-genai": "0.18.0", ...}
    machine: dict                    # the `slmctl doctor --json` object
    settings: dict                   # repetitions, warmup, isolate, ...
    models: list[ModelInfo]
    configs: list[BenchConfig]
    samples: list[Sample]
    summary: list[ConfigSummary]
