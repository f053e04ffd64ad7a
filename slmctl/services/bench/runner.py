"""Running the benchmark: one sample (load, generate exactly N tokens, measure), in this process or in
a fresh one (``--isolate``), and the whole matrix with warm-up runs and interleaved repetitions.

Each sample loads the model, feeds it a synthetic prompt of exactly ``prompt_tokens`` tokens (made
from the model's own tokenizer), generates exactly ``gen_tokens`` tokens with end-of-sequence ignored,
and closes the model again (a configuration of N > 1 concurrent requests is measured by
:mod:`slmctl.services.bench.concurrent` instead; what both share, the prompt, the load options and the
memory sampler, is :mod:`slmctl.services.bench.workload`'s). The figures come from the backend's
:class:`~slmctl.backends.base.Stats` (nanosecond timings taken around the runtime calls), the load time
from ``LoadedInfo.load_duration`` and the peak resident memory from a background thread polling the
process every few milliseconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from slmctl.errors import OperationFailed, SlmctlError, UsageError
from slmctl.services.bench.matrix import label
from slmctl.services.bench.model import BenchConfig, Sample
from slmctl.services.bench.workload import PeakGpuMemory, PeakMemory, check_fits, load_options, synthetic_prompt

if TYPE_CHECKING:
    from slmctl.engine import Engine

#: Seconds an isolated sample may take before it is stopped (a hung runtime must not hang the run).
ISOLATED_TIMEOUT = 3600.0


def run_sample(engine: Engine, config: BenchConfig, repetition: int) -> Sample:
    """Load, generate and measure one repetition of ``config`` in this process (the model is closed after);
    N > 1 concurrent requests go to :func:`slmctl.services.bench.concurrent.run_concurrent_sample`."""
    if config.concurrency > 1:
        from slmctl.services.bench.concurrent import run_concurrent_sample

        return run_concurrent_sample(engine, config, repetition)
    from slmctl.backends.base import GenerateRequest
    from slmctl.options import SamplingOptions

    manifest = engine.manifest(config.model)
    if manifest.format != config.format:
        raise UsageError(f"model '{config.model}' is a {manifest.format} model, not {config.format}")
    from slmctl.engine.runner import ThreadRunner

    with PeakMemory() as memory, PeakGpuMemory() as gpu:
        runner = ThreadRunner(engine.load(manifest, load_options(config), device=config.device), name=config.model)
        model = runner.model
        try:
            check_fits(config, model.info.context_length)
            tokens = synthetic_prompt(model, config.prompt_tokens)
            request = GenerateRequest(SamplingOptions(num_predict=config.gen_tokens, seed=1), tokens=tokens,
                                      ignore_eos=True)
            generation = runner.submit(request)  # the runner's worker drives the runtime, as in serve
            generation.complete()
            stats = generation.stats
            info = model.info
        finally:
            runner.close()
    if stats is None or stats.eval_count != config.gen_tokens or stats.prompt_eval_count != config.prompt_tokens:
        got = (stats.prompt_eval_count, stats.eval_count) if stats else (0, 0)
        raise OperationFailed(
            f"{label(config)}: expected {config.prompt_tokens} prompt and {config.gen_tokens} generated tokens, "
            f"got {got[0]} and {got[1]}" + (f" (stopped: {stats.done_reason})" if stats else ""),
            "the runtime stopped early; try a larger --ctx or fewer --gen-tokens")
    return Sample(
        config=config.key,
        repetition=repetition,
        device=info.device,
        load_ms=info.load_duration / 1e6,
        ttft_ms=stats.time_to_first_token / 1e6,
        prompt_tokens=stats.prompt_eval_count,
        prompt_ms=stats.prompt_eval_duration / 1e6,
        prompt_tps=stats.prompt_eval_rate,
        gen_tokens=stats.eval_count,
        gen_ms=stats.eval_duration / 1e6,
        gen_tps=stats.eval_rate,
        peak_rss=memory.peak,
        peak_gpu_memory=gpu.peak,
    )


# -- isolation ---------------------------------------------------------------------------------------

def worker_argument(config: BenchConfig, repetition: int) -> str:
    """The one JSON argument of ``python -m slmctl.services.bench.worker``."""
    return json.dumps({"config": config.model_dump(mode="json"), "repetition": repetition})


def _error_class(name: str) -> type[SlmctlError]:
    from slmctl import errors

    found = getattr(errors, name, None)
    return found if isinstance(found, type) and issubclass(found, SlmctlError) else OperationFailed


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_isolated(config: BenchConfig, repetition: int, home: Path, *, timeout: float = ISOLATED_TIMEOUT,
                 env: Mapping[str, str] | None = None) -> Sample:
    """:func:`run_sample` in a fresh Python process (``env``, this process's if None, with
    ``SLMCTL_HOME=home``), so no sample inherits the memory, caches or threads of the one before. The
    worker prints one JSON object on stdout."""
    env = {**(os.environ if env is None else env), "SLMCTL_HOME": str(home)}
    command = [sys.executable, "-m", "slmctl.services.bench.worker", worker_argument(config, repetition)]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise OperationFailed(f"{label(config)}: the isolated run took longer than {timeout:.0f} s and was stopped",
                              details=_tail(stderr)) from None
    except OSError as exc:
        raise OperationFailed(f"could not start the isolated benchmark process: {exc}") from exc
    result = None
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                result = json.loads(line)
            except ValueError:
                result = None
            break
    if isinstance(result, dict) and "sample" in result and proc.returncode == 0:
        try:
            return Sample.model_validate(result["sample"])
        except ValueError as exc:
            raise OperationFailed(f"{label(config)}: the isolated run returned an invalid sample: {exc}") from exc
    if isinstance(result, dict) and isinstance(result.get("error"), dict):
        error = result["error"]
        raise _error_class(str(error.get("type")))(str(error.get("message")), error.get("hint"),
                                                   details=_tail(proc.stderr) or None)
    tail = _tail(proc.stderr)
    last = tail.splitlines()[-1] if tail else "no error output"
    raise OperationFailed(f"{label(config)}: the isolated run failed (exit {proc.returncode}): {last}",
                          "run again with --debug to see the worker's output", details=tail or None)


# -- the matrix --------------------------------------------------------------------------------------

def run_matrix(engine: Engine, configs: Sequence[BenchConfig], *, repetitions: int = 3, warmup: int = 1,
               isolate: bool = False, home: Path | None = None,
               progress: Callable[[str], None] = lambda _line: None,
               env: Mapping[str, str] | None = None) -> list[Sample]:
    """Warm-up runs (discarded), then ``repetitions`` rounds, each running every configuration once
    (rep 0: A B C, rep 1: A B C, ...) so slow drifts (heat, background load) spread over all of them.

    ``progress`` receives one line per run: ``[3/12] tiny gguf cpu t2 p64 g32: 35.2 tok/s``; for N
    concurrent requests ``[4/12] tiny gguf cpu p64 g32 n4: 90.1 tok/s aggregate, 23.0 tok/s per stream``.
    """
    if repetitions < 1:
        raise UsageError("--repetitions must be at least 1")
    if warmup < 0:
        raise UsageError("--warmup cannot be negative")
    if isolate and home is None:
        raise ValueError("run_matrix(isolate=True) needs the home of the model store")
    total = (warmup + repetitions) * len(configs)
    done = 0
    samples: list[Sample] = []
    for rounds, warm in ((warmup, True), (repetitions, False)):
        for repetition in range(rounds):
            for config in configs:
                if isolate:
                    sample = run_isolated(config, repetition, home, env=env)  # type: ignore[arg-type]
                else:
                    sample = run_sample(engine, config, repetition)
                done += 1
                prefix = "warm-up " if warm else ""
                rate = f"{sample.gen_tps:.1f} tok/s"
                if sample.agg_tps is not None:
                    rate = f"{sample.agg_tps:.1f} tok/s aggregate, {rate} per stream"
                progress(f"[{done}/{total}] {prefix}{label(config, sample.device)}: {rate}")
                if not warm:
                    samples.append(sample)
    return samples
