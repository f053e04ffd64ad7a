"""``slmctl bench MODEL...``: measure load time, time to first token, prompt and generation speed and
peak memory over a matrix of backends, devices, threads, sizes and numbers of concurrent requests;
report, keep a history, gate on a baseline. Also ``slmctl models test MODEL --benchmark`` (the same, for one model).

The run lives in :mod:`slmctl.services.bench` (:func:`~slmctl.services.bench.session.run_bench`: matrix,
runner, stats, report, plot, history, gate); this module parses the flags, calls it, and decides what
goes where (results on stdout or in a file, progress and the gate's verdict on stderr).
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, TYPE_CHECKING, Optional

import typer

from slmctl.cli.params import ModelName

from slmctl.cli.usage import epilog, Command, Group

if TYPE_CHECKING:
    from slmctl.cli.context import AppContext
    from slmctl.services.bench.model import BenchDocument
    from slmctl.services.bench.session import GateResult, ListValue

#: The examples of the help page, one command line each.
EXAMPLES = [
    'slmctl bench tiny',
    'slmctl bench phi3 phi3-onnx           (GGUF and ONNX side by side)',
    'slmctl bench phi3 phi3-onnx --backend onnx      (only the ONNX one)',
    'slmctl bench phi3 --device cpu,gpu --threads 1,2,4 --gen-tokens 32,128',
    'slmctl bench phi3 --concurrency 1,4,8     (size a machine: N requests at once)',
    'slmctl bench phi3 --repetitions 5 --warmup 2 --isolate',
    'slmctl bench phi3 --json > result.json',
    'slmctl bench phi3 --markdown >> RESULTS.md',
    'slmctl bench phi3 --output result.json   (JSON file + text table)',
    'slmctl bench phi3 --csv -o result.csv --plot result.png',
    'slmctl bench phi3 --baseline result.json --max-regression 5%',
    'slmctl bench --history                  (past runs)',
]

_NOTES = (
    'Output: the text table on stdout by default; --json, --csv or --markdown print that format instead. With '
    '--output FILE the chosen format (JSON when none is chosen) goes to FILE and the text table to stdout. '
    'Progress lines go to stderr. Peak memory is the resident memory of the process during load and '
    'generation; without --isolate it includes what earlier runs left in the process.\n\nWith --baseline, '
    "figures worse than the baseline's median by more than --max-regression fail the run (exit 1) and are "
    'listed on stderr, with the configurations found on one side only; a baseline that matches no '
    'configuration of the run (other models or settings) fails it with exit 8. With --json that verdict is '
    'one JSON line on stderr.\n\nExit codes: 0 ok (and no regression), 1 failure or a regression against '
    '--baseline, 2 usage, 3 model not found, 7 device unavailable, 8 --baseline matched no configuration '
    '(nothing compared).'
)

COMMAND = {
    "name": "bench",
    "help": "Benchmark models: load time, time to first token, prompt and generation tokens/s, peak memory.\n\n"
            "Every configuration of the matrix (model x backend x device x threads x context x prompt and "
            "generation length x concurrency) is loaded fresh, fed a synthetic prompt of exactly --prompt-tokens "
            "tokens and made to generate exactly --gen-tokens tokens (end-of-sequence ignored). With "
            "--concurrency N (N > 1) the model is loaded once for N parallel requests and N such requests run at "
            "once in the process: GGUF models decode them together, ONNX models queue them; the report adds "
            "aggregate tokens/s (all streams), time to first token p50 and p95, and per-stream tokens/s. "
            "Warm-up runs come first "
            "and are discarded; repetitions are interleaved across configurations. Results show the median, "
            "min, max and spread of each figure, with unstable figures flagged. Every run is appended to the "
            "history (see --history). List flags take comma lists (--threads 1,2,4) or repeat.",
    "epilog": epilog(EXAMPLES, _NOTES),
}

_LIST = "N[,N...]"


def command(
    ctx: typer.Context,
    models: Optional[list[str]] = typer.Argument(None, help="Model name[:tag]s to benchmark.", show_default=False),
    backend: Optional[list[str]] = typer.Option(
        None, "--backend", metavar="gguf,onnx", help="Only the models of these formats (default: all given)."),
    device: Optional[list[str]] = typer.Option(
        None, "--device", metavar="DEV[,DEV...]",
        help="Devices: cpu, gpu, npu, auto or a name (cuda, metal, dml, ...) (default: the best usable)."),
    threads: Optional[list[str]] = typer.Option(
        None, "--threads", metavar=_LIST, help="CPU thread counts (default: the runtime's, physical cores)."),
    ctx_sizes: Optional[list[str]] = typer.Option(
        None, "--ctx", metavar=_LIST, help="Context sizes (default: 4096 capped at the model's)."),
    prompt_tokens: Optional[list[str]] = typer.Option(
        None, "--prompt-tokens", metavar=_LIST, help="Prompt lengths in tokens (default: 64)."),
    gen_tokens: Optional[list[str]] = typer.Option(
        None, "--gen-tokens", metavar=_LIST, help="Generated tokens per run (default: 32)."),
    concurrency: Optional[list[str]] = typer.Option(
        None, "--concurrency", metavar=_LIST,
        help="Requests generating at once, each with those tokens (default: 1; N > 1 adds aggregate tok/s, "
             "TTFT p50/p95 and per-stream tok/s)."),
    repetitions: int = typer.Option(3, "--repetitions", "-n", min=1, metavar="N",
                                    help="Measured runs per configuration."),
    warmup: int = typer.Option(1, "--warmup", min=0, metavar="N", help="Discarded warm-up runs per configuration."),
    isolate: bool = typer.Option(False, "--isolate", help="Run every sample in a fresh process (cleaner memory "
                                 "figures, slower)."),
    json_output: bool = typer.Option(False, "--json", help="Print the result document as JSON."),
    csv_output: bool = typer.Option(False, "--csv", help="Print CSV: one row per configuration (median, min, "
                                    "max, stdev)."),
    markdown_output: bool = typer.Option(False, "--markdown", help="Print a Markdown table."),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", metavar="FILE", dir_okay=False,
        help="Write the result (JSON, or the format chosen) to FILE; stdout then shows the text table."),
    plot: Optional[Path] = typer.Option(None, "--plot", metavar="FILE.png", dir_okay=False,
                                        help="Draw a chart of the results (needs matplotlib)."),
    history: bool = typer.Option(False, "--history", help="List past benchmark runs (no MODEL), then exit."),
    baseline: Optional[Path] = typer.Option(
        None, "--baseline", metavar="OLD.json",
        help="Compare with an earlier JSON result; exit 1 when a figure regressed, 8 when no configuration "
             "matched."),
    max_regression: Optional[str] = typer.Option(
        None, "--max-regression", metavar="PCT", help="Largest tolerated regression with --baseline (default 5%)."),
) -> None:
    bench(ctx.obj, models=models or [], backend=backend, device=device, threads=threads, ctx=ctx_sizes,
          prompt_tokens=prompt_tokens, gen_tokens=gen_tokens, concurrency=concurrency, repetitions=repetitions,
          warmup=warmup, isolate=isolate, fmt=_chosen_format(json_output, csv_output, markdown_output), output=output,
          plot=plot, history=history, baseline=baseline, max_regression=max_regression)


def _chosen_format(json_output: bool, csv_output: bool, markdown_output: bool) -> str | None:
    from slmctl.errors import UsageError

    chosen = [name for name, flag in (("json", json_output), ("csv", csv_output), ("markdown", markdown_output))
              if flag]
    if len(chosen) > 1:
        raise UsageError(f"choose one output format, not {' and '.join('--' + c for c in chosen)}")
    return chosen[0] if chosen else None


def bench(app: AppContext, *, models: list[str], backend: ListValue = None, device: ListValue = None,
          threads: ListValue = None, ctx: ListValue = None, prompt_tokens: ListValue = None,
          gen_tokens: ListValue = None, concurrency: ListValue = None,
          repetitions: int = 3,
          warmup: int = 1, isolate: bool = False, fmt: str | None = None, output: Path | None = None,
          plot: Path | None = None, history: bool = False, baseline: Path | None = None,
          max_regression: str | None = None) -> None:
    """The body of ``slmctl bench`` (plain arguments, so ``models test --benchmark`` shares it)."""
    if history:
        _history(app, models, fmt)
        return
    from slmctl.services.bench.session import BenchRequest, run_bench

    request = BenchRequest(models=models, backend=backend, device=device, threads=threads, ctx=ctx,
                           prompt_tokens=prompt_tokens, gen_tokens=gen_tokens, concurrency=concurrency,
                           repetitions=repetitions, warmup=warmup, isolate=isolate, plot=plot, baseline=baseline,
                           max_regression=max_regression)
    engine = app.engine()

    def progress(line: str) -> None:
        app.stderr.write(line + "\n")
        app.stderr.flush()

    gate = run_bench(engine, request, home=app.settings.home, progress=progress,
                     emit=lambda document: _emit(app, document, fmt=fmt, output=output),
                     resolve=lambda name: app.manifest(engine, name), env=app.env)
    if gate is not None:
        _gate(app, gate, fmt=fmt)


def _history(app: AppContext, models: list[str], fmt: str | None) -> None:
    """``--history``: the past runs, as text or JSON."""
    from slmctl.errors import UsageError
    from slmctl.services.bench import history as bench_history

    if models:
        raise UsageError("--history lists past runs and takes no MODEL",
                         "every benchmark run is added to the history automatically")
    entries = bench_history.read_history(app.settings.home)
    if fmt == "json":
        from slmctl.cli.output import print_json

        print_json(entries, app.stdout)
    else:
        _write(app.stdout, bench_history.history_text(entries))


def _render(document: BenchDocument, fmt: str | None, *, width: int = 80, color: bool = False) -> str:
    from slmctl.services.bench import report
    from slmctl.services.bench.text import to_text

    if fmt == "json":
        return report.to_json(document)
    if fmt == "csv":
        return report.to_csv(document)
    if fmt == "markdown":
        return report.to_markdown(document)
    return to_text(document, width=width, color=color)


def _write(stream: IO[str], text: str) -> None:
    stream.write(text if text.endswith("\n") else text + "\n")
    stream.flush()


def _emit(app: AppContext, document: BenchDocument, *, fmt: str | None, output: Path | None) -> None:
    """stdout: the chosen format (text by default); with --output, FILE gets the chosen format (JSON by
    default) and stdout the text table."""
    import shutil

    from slmctl.errors import OperationFailed

    width = shutil.get_terminal_size((80, 24)).columns if app.stdout_is_tty else 80
    if output is not None:
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            text = _render(document, fmt or "json")
            output.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
        except OSError as exc:
            raise OperationFailed(f"could not write {output}: {exc.strerror or exc}") from exc
        app.stderr.write(f"result written to {output}\n")
        _write(app.stdout, _render(document, None, width=width, color=app.color))
    else:
        _write(app.stdout, _render(document, fmt, width=width, color=app.color and fmt is None))


def _gate(app: AppContext, gate: GateResult, *, fmt: str | None = None) -> None:
    """The verdict on stderr (one JSON line with --json, else text), listing the configurations unmatched on
    each side; exit 1 when anything regressed, 8 when nothing was compared."""
    import json

    from slmctl.services.bench.gate import gate_json, gate_text

    if fmt == "json":
        verdict = gate_json(gate.regressions, gate.missing, compared=gate.compared, max_regression=gate.threshold,
                            baseline=None if gate.baseline is None else str(gate.baseline))
        _write(app.stderr, json.dumps(verdict, ensure_ascii=False))
    else:
        app.stderr.write(f"baseline {gate.baseline} (max regression {gate.threshold * 100:g}%): ")
        _write(app.stderr, gate_text(gate.regressions, gate.missing, compared=len(gate.compared)))
    gate.require_match()
    if gate.regressions:
        raise typer.Exit(1)


# -- slmctl models test MODEL --benchmark -------------------------------------------------------------

models_app = typer.Typer(
    name="models",
    cls=Group,
    help="Check models (see also: list, show, bench).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


@models_app.command(
    "test",
    cls=Command,
    help="Test a model. With --benchmark: the same as 'slmctl bench MODEL'.",
    epilog="Examples:\n\n  slmctl models test tiny --benchmark\n\n  slmctl models test tiny --benchmark --json\n\n"
           "For a matrix of devices, threads and sizes, or a baseline gate, use 'slmctl bench'.",
)
def models_test(
    ctx: typer.Context,
    model: ModelName,
    benchmark: bool = typer.Option(False, "--benchmark", help="Benchmark the model (required)."),
    json_output: bool = typer.Option(False, "--json", help="Print the result document as JSON."),
) -> None:
    from slmctl.errors import Interrupted, UsageError

    if not benchmark:
        raise UsageError("models test needs --benchmark", f"slmctl models test {model} --benchmark")
    try:
        bench(ctx.obj, models=[model], fmt="json" if json_output else None)
    except KeyboardInterrupt:
        raise Interrupted() from None
