"""One benchmark run, start to end: what ``slmctl bench`` (and ``slmctl models test --benchmark``) calls.

:func:`run_bench` takes a :class:`BenchRequest` (the flags, as given) and, in this order: checks what
can fail before minutes of benchmarking (``--plot`` without matplotlib, a bad ``--baseline`` or
threshold, a bad list value), looks the models up, expands the matrix and checks every configuration's
device (exit 7 now, not after the other runs), measures (progress lines through a callback), hands the
result document to the caller's ``emit`` (the results are out before anything later can fail), appends
it to the history (a failure only warns), draws the plot and compares with the baseline. The verdict
comes back as a :class:`GateResult`; showing it, and the document, is the caller's business.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from slmctl.errors import SlmctlError, UsageError

if TYPE_CHECKING:
    from slmctl.engine import Engine
    from slmctl.services.bench.gate import Regression, Unmatched
    from slmctl.services.bench.model import BenchConfig, BenchDocument
    from slmctl.store import Manifest

#: A ``--backend``/``--device``/... value: a comma list, or the list of a repeated flag.
ListValue = Optional[str | Sequence[str]]
Progress = Callable[[str], None]


@dataclass(frozen=True)
class BenchRequest:
    """What to benchmark and how (the command's flags, unparsed lists included)."""

    models: Sequence[str]
    backend: ListValue = None
    device: ListValue = None
    threads: ListValue = None
    ctx: ListValue = None
    prompt_tokens: ListValue = None
    gen_tokens: ListValue = None
    concurrency: ListValue = None
    repetitions: int = 3
    warmup: int = 1
    isolate: bool = False
    plot: Path | None = None
    baseline: Path | None = None
    max_regression: str | None = None


@dataclass(frozen=True)
class GateResult:
    """The comparison of a run with its ``--baseline``."""

    document: BenchDocument
    baseline_document: BenchDocument
    baseline: Path | None
    threshold: float
    regressions: list[Regression] = field(default_factory=list)
    missing: Unmatched | None = None
    compared: list[str] = field(default_factory=list)

    def require_match(self) -> None:
        """Raise :class:`~slmctl.errors.NothingCompared` (exit 8) when no configuration was compared."""
        from slmctl.services.bench.gate import require_match

        require_match(self.document, self.baseline_document,
                      source=self.baseline if self.baseline is not None else "the baseline")


def check_request(request: BenchRequest) -> None:
    """The usage errors of a request, before anything is loaded."""
    if not request.models:
        raise UsageError("missing MODEL: give the models to benchmark",
                         "slmctl bench MODEL... (or slmctl bench --history for past runs)")
    if request.max_regression is not None and request.baseline is None:
        raise UsageError("--max-regression needs --baseline OLD.json")
    if request.repetitions < 1 or request.warmup < 0:
        raise UsageError("--repetitions must be at least 1 and --warmup at least 0")
    if request.plot is not None:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            raise UsageError("--plot needs matplotlib", "pip install 'slmctl[plot]'")  # as plot.write_plot


def run_bench(engine: Engine, request: BenchRequest, *, home: Path, progress: Progress,
              emit: Callable[[BenchDocument], None], resolve: Callable[[str], Manifest] | None = None,
              env: Mapping[str, str] | None = None) -> GateResult | None:
    """Run ``request`` (see the module docstring); ``resolve`` finds a stored model by name (default
    :meth:`Engine.manifest`); ``env`` is the environment of ``--isolate``'s worker processes (the
    caller's; this process's if None). Returns the baseline comparison, None without ``--baseline``."""
    from slmctl.services.bench import history
    from slmctl.services.bench.matrix import MAX_CONCURRENCY, expand, parse_list

    check_request(request)
    gate = None
    if request.baseline is not None:  # read it first: a bad baseline should fail before minutes of benchmarking
        from slmctl.services.bench.gate import load_document, parse_threshold

        gate = (load_document(request.baseline), parse_threshold(request.max_regression or "5%"))
    backends = parse_list(request.backend, str, flag="--backend")
    dimensions = {
        "devices": parse_list(request.device, str, flag="--device"),
        "threads": parse_list(request.threads, int, flag="--threads", minimum=0),
        "ctxs": parse_list(request.ctx, int, flag="--ctx", minimum=0),
        "prompt_tokens": parse_list(request.prompt_tokens, int, flag="--prompt-tokens", minimum=1),
        "gen_tokens": parse_list(request.gen_tokens, int, flag="--gen-tokens", minimum=1),
        "concurrency": parse_list(request.concurrency, int, flag="--concurrency", minimum=1,
                                  maximum=MAX_CONCURRENCY),
    }
    find = resolve or engine.manifest
    manifests = {name: find(name) for name in dict.fromkeys(request.models)}  # unknown -> exit 3
    configs = expand([(name, m.format) for name, m in manifests.items()], backends=backends, **dimensions)
    for config in configs:  # an unusable device fails now (exit 7), not after the other runs
        engine.choose_device(manifests[config.model], config.device)

    document = measure(engine, manifests, configs, repetitions=request.repetitions, warmup=request.warmup,
                       isolate=request.isolate, home=home, progress=progress, env=env)
    emit(document)
    try:
        history.append_history(home, document)
    except SlmctlError as exc:  # the results are out already: a history problem only warns
        progress(f"warning: the run was not added to the history: {exc.message}")
    if request.plot is not None:
        from slmctl.services.bench.plot import write_plot

        write_plot(document, request.plot)
        progress(f"plot written to {request.plot}")
    return None if gate is None else compare_with(document, *gate, baseline=request.baseline)


def compare_with(document: BenchDocument, baseline_document: BenchDocument, threshold: float, *,
                 baseline: Path | None) -> GateResult:
    """``document`` against the baseline: the regressions beyond ``threshold`` and what matched."""
    from slmctl.services.bench.gate import compare, matched, unmatched

    return GateResult(document, baseline_document, baseline, threshold,
                      regressions=compare(document, baseline_document, threshold),
                      missing=unmatched(document, baseline_document),
                      compared=matched(document, baseline_document))


def measure(engine: Engine, manifests: dict[str, Manifest], configs: list[BenchConfig], *, repetitions: int,
            warmup: int, isolate: bool, home: Path, progress: Progress,
            env: Mapping[str, str] | None = None) -> BenchDocument:
    """Run the matrix (a header line, then progress lines) and build the result document."""
    from slmctl import __version__
    from slmctl.engine.devices import runtime_versions
    from slmctl.services import diagnostics
    from slmctl.services.bench.model import ModelInfo
    from slmctl.services.bench.report import build_document
    from slmctl.services.bench.runner import run_matrix

    runs = len(configs) * (repetitions + warmup)
    progress(f"benchmarking {len(configs)} configuration{'s' if len(configs) != 1 else ''} x {repetitions} "
             f"repetition{'s' if repetitions != 1 else ''}"
             + (f" (+{warmup} warm-up)" if warmup else "") + f": {runs} runs"
             + (f", up to {most} requests at once" if (most := max(c.concurrency for c in configs)) > 1
                else "")
             + (", each in a fresh process" if isolate else ""))
    samples = run_matrix(engine, configs, repetitions=repetitions, warmup=warmup, isolate=isolate,
                         home=home, progress=progress, env=env)
    models = [ModelInfo(name=name, digest=m.digest(), format=m.format, quantization=m.details.quantization,
                        parameter_size=m.details.parameter_size) for name, m in manifests.items()
              if any(c.model == name for c in configs)]
    settings = {"repetitions": repetitions, "warmup": warmup, "isolate": isolate, "seed": 1, "ignore_eos": True}
    # the machine first: doctor's collect runs both runtime probes, which the versions then reuse
    machine = diagnostics.collect()
    return build_document(configs=configs, samples=samples, models=models, machine=machine,
                          runtimes=runtime_versions(), settings=settings, slmctl_version=__version__)
