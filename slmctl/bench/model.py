"""The data of a benchmark: what to run (configurations), what one run measured (samples), and the
summary of a configuration. Shared by the runner, the statistics, the reporters and the regression gate.

Times are milliseconds, rates tokens per second, memory bytes. A result document (``BenchDocument``)
is what ``--json`` prints, ``--output`` writes, the history keeps and ``--baseline`` reads back.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

#: Figures reported per configuration, and whether a higher value is better.
FIGURES: dict[str, bool] = {
    "gen_tps": True,        # generation tokens/s
    "prompt_tps": True,     # prompt processing tokens/s
    "ttft_ms": False,       # time to first token
    "load_ms": False,       # model load time
    "peak_rss": False,      # peak resident memory of the process during the run
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BenchConfig(_Strict):
    """One cell of the matrix: a model on a backend/device with fixed sizes."""

    model: str                      # the model name as given (name[:tag])
    format: Literal["gguf", "onnx"]
    device: str | None = None       # requested device (None = best); the device used is in the samples
    threads: int = 0                # 0 = the backend's default
    ctx: int = 0                    # context size; 0 = the default (4096 capped at the model's)
    prompt_tokens: int = 64
    gen_tokens: int = 32

    @property
    def key(self) -> str:
        """A stable identifier, used to match configurations against a baseline."""
        return (f"{self.model}|{self.format}|{self.device or 'auto'}|t{self.threads}|c{self.ctx}"
                f"|p{self.prompt_tokens}|g{self.gen_tokens}")


class Sample(_Strict):
    """What one repetition of one configuration measured (exact token counts included)."""

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


class FigureStats(_Strict):
    median: float
    min: float
    max: float
    stdev: float
    n: int


class ConfigSummary(_Strict):
    config: BenchConfig
    key: str
    figures: dict[str, FigureStats]  # keys from FIGURES
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
