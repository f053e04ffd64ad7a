"""Reports of a benchmark: builds the ``BenchDocument`` and renders it as JSON, CSV and Markdown.

Owns the document assembly (timestamp, summaries through :mod:`slmctl.services.bench.stats`), its JSON
Schema and the file renderings: ``--json``/``--output`` (JSON), ``--csv``, ``--markdown`` (to paste in
a GitHub issue), and the labels and values the terminal table (with a bar chart of generation speed:
:func:`slmctl.services.bench.text.to_text`) is built from. Configurations of N > 1 concurrent requests
add their figures (aggregate tokens/s, TTFT p95) and a concurrency column; a document without any reads
as before. Pure functions: nothing here writes files or prints.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from slmctl.services.bench.model import (CONCURRENCY_FIGURES, FIGURES, SCHEMA_VERSION, BenchConfig, BenchDocument,
                                         ConfigSummary, FigureStats, ModelInfo, Sample)
from slmctl.services.bench.stats import UNSTABLE_RULE, summarize_all
from slmctl.units import human_size

#: JSON Schema dialect and identifier of the result document.
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = f"urn:slmctl:bench-document:v{SCHEMA_VERSION}"

#: Human label and unit of each figure.
FIGURE_LABELS: dict[str, tuple[str, str]] = {
    "gen_tps": ("generation", "tok/s"),
    "prompt_tps": ("prompt processing", "tok/s"),
    "ttft_ms": ("time to first token", "ms"),
    "load_ms": ("load time", "ms"),
    "peak_rss": ("peak RSS", "B"),
    "agg_tps": ("aggregate generation", "tok/s"),
    "ttft_p95_ms": ("time to first token p95", "ms"),
}
#: What a figure is called for a configuration of N > 1 concurrent requests, where it differs.
CONCURRENT_LABELS: dict[str, str] = {
    "ttft_ms": "time to first token p50",
    "prompt_tps": "prompt processing per stream",
    "gen_tps": "generation per stream",
}


def figure_label(figure: str, config: BenchConfig) -> str:
    """The human label of ``figure`` for ``config`` (``generation per stream`` with concurrent requests)."""
    if config.concurrency > 1 and figure in CONCURRENT_LABELS:
        return CONCURRENT_LABELS[figure]
    return FIGURE_LABELS.get(figure, (figure, ""))[0]


# ----------------------------------------------------------------------------- document

def build_document(*, configs: Sequence[BenchConfig], samples: Sequence[Sample],
                   models: Sequence[ModelInfo | Mapping[str, Any]], machine: Mapping[str, Any],
                   runtimes: Mapping[str, str | None], settings: Mapping[str, Any],
                   slmctl_version: str) -> BenchDocument:
    """The result document of one run, stamped now (UTC, ISO 8601) and summarized."""
    return BenchDocument(
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        slmctl_version=slmctl_version, runtimes=dict(runtimes), machine=dict(machine),
        settings=dict(settings), models=list(models), configs=list(configs), samples=list(samples),
        summary=summarize_all(configs, samples))


def document_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a result document."""
    schema = BenchDocument.model_json_schema()
    return {"$schema": SCHEMA_DIALECT, "$id": SCHEMA_ID, **schema}


def to_json(doc: BenchDocument) -> str:
    """The document as indented JSON (no trailing newline); ``BenchDocument.model_validate_json`` reads it back."""
    return doc.model_dump_json(indent=2)


# ----------------------------------------------------------------------------- helpers

def format_value(figure: str, value: float, *, scale: float | None = None) -> str:
    """A figure's value with the precision a reader needs (sizes in human units, no unit otherwise).

    ``scale`` (default: ``value``) chooses the precision, so a stdev can be shown like its median.
    """
    if figure == "peak_rss":
        return human_size(int(value))
    if figure.endswith("_ms"):
        return f"{value:.0f}" if abs(value if scale is None else scale) >= 100 else f"{value:.1f}"
    return f"{value:.1f}"


def format_with_unit(figure: str, value: float) -> str:
    unit = FIGURE_LABELS[figure][1]
    text = format_value(figure, value)
    return text if unit == "B" else f"{text} {unit}"


def format_date(created_at: str) -> str:
    """``2026-11-26 16:20 UTC`` from an ISO 8601 timestamp (unchanged when it does not parse)."""
    try:
        when = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
    except ValueError:
        return created_at
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc)
    return when.strftime("%Y-%m-%d %H:%M UTC")


def machine_line(machine: Mapping[str, Any]) -> str:
    """``Intel(R) ... (8 cores), 16.0 GB memory`` from a ``slmctl doctor --json`` object."""
    cpu = machine.get("cpu") if isinstance(machine.get("cpu"), Mapping) else {}
    memory = machine.get("memory") if isinstance(machine.get("memory"), Mapping) else {}
    model = str(cpu.get("model") or "unknown CPU")
    cores = cpu.get("cores")
    parts = [f"{model} ({cores} cores)" if isinstance(cores, int) else model]
    total = memory.get("total")
    parts.append(f"{human_size(total)} memory" if isinstance(total, int) else "memory unknown")
    return ", ".join(parts)


def versions_line(doc: BenchDocument) -> str:
    """``slmctl 0.1.0, llama-cpp-python 0.3.36, ...`` (runtimes not installed left out)."""
    parts = [f"slmctl {doc.slmctl_version}"]
    parts += [f"{name} {version}" for name, version in doc.runtimes.items() if version]
    return ", ".join(parts)


def samples_of(doc: BenchDocument, key: str) -> list[Sample]:
    return [s for s in doc.samples if s.config == key]


def devices_used(samples: Sequence[Sample], config: BenchConfig) -> str:
    """The device(s) the runtime really used, else the requested one (``auto`` for the best)."""
    used = sorted({s.device for s in samples})
    return "+".join(used) if used else (config.device or "auto")


def token_count(values: Sequence[int], requested: int) -> str:
    """The exact token count (``64``), a range when runs differ (``30-32``), else ``~requested``."""
    if not values:
        return f"~{requested}"
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}-{high}"


def config_labels(configs: Sequence[BenchConfig]) -> list[str]:
    """Short labels: the model plus only the fields that differ between configurations."""
    fields: list[tuple[str, Any]] = [
        ("format", lambda c: c.format), ("device", lambda c: c.device or "auto"),
        ("threads", lambda c: f"t={c.threads or 'auto'}"), ("ctx", lambda c: f"ctx={c.ctx or 'auto'}"),
        ("tokens", lambda c: f"p{c.prompt_tokens}/g{c.gen_tokens}"), ("concurrency", lambda c: f"n={c.concurrency}")]
    varying = [get for _, get in fields if len({get(c) for c in configs}) > 1]
    return [" ".join([c.model, *(get(c) for get in varying)]) for c in configs]


def _summary_for(doc: BenchDocument) -> list[tuple[ConfigSummary, list[Sample]]]:
    return [(summary, samples_of(doc, summary.key)) for summary in doc.summary]


# ----------------------------------------------------------------------------- CSV

def csv_figures(concurrency: bool = False) -> list[str]:
    """The figures of the CSV columns: ``FIGURES``, plus ``CONCURRENCY_FIGURES`` with concurrent runs."""
    return [*FIGURES, *(CONCURRENCY_FIGURES if concurrency else ())]


def csv_columns(concurrency: bool = False) -> list[str]:
    """The CSV header: configuration fields, then median/min/max/stdev/unstable per figure. With
    ``concurrency`` (a document with N > 1 concurrent requests) also a ``concurrency`` column after
    ``gen_tokens`` and the concurrency figures' columns at the end."""
    columns = ["key", "model", "format", "device", "device_used", "threads", "ctx", "prompt_tokens",
               "gen_tokens", *(["concurrency"] if concurrency else []), "n"]
    for figure in csv_figures(concurrency):
        columns += [f"{figure}_{part}" for part in ("median", "min", "max", "stdev", "unstable")]
    return columns


def _csv_number(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.4f}".rstrip("0").rstrip(".")


def to_csv(doc: BenchDocument) -> str:
    """One row per configuration (header first); unstable flags are ``1``/``0``, missing figures empty."""
    concurrency = any(summary.config.concurrency > 1 for summary in doc.summary)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(csv_columns(concurrency))
    for summary, samples in _summary_for(doc):
        c = summary.config
        n = max((stats.n for stats in summary.figures.values()), default=0)
        row: list[str] = [summary.key, c.model, c.format, c.device or "auto", devices_used(samples, c),
                          str(c.threads), str(c.ctx), str(c.prompt_tokens), str(c.gen_tokens),
                          *([str(c.concurrency)] if concurrency else []), str(n)]
        for figure in csv_figures(concurrency):
            stats = summary.figures.get(figure)
            if stats is None:
                row += ["", "", "", "", ""]
                continue
            row += [_csv_number(stats.median), _csv_number(stats.min), _csv_number(stats.max),
                    _csv_number(stats.stdev), "1" if figure in summary.unstable else "0"]
        writer.writerow(row)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- Markdown

def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _median_stdev(figure: str, stats: FigureStats) -> str:
    unit = FIGURE_LABELS[figure][1]
    text = f"{format_value(figure, stats.median)} ± {format_value(figure, stats.stdev, scale=stats.median)}"
    return text if unit == "B" else f"{text} {unit}"


def to_markdown(doc: BenchDocument) -> str:
    """A report to paste in a GitHub issue: title, machine, versions, then one table per configuration."""
    lines = [f"## slmctl bench — {format_date(doc.created_at)}", "",
             f"**Machine:** {_md(machine_line(doc.machine))}  ",
             f"**Versions:** {_md(versions_line(doc))}"]
    settings = ", ".join(f"{k}={v}" for k, v in doc.settings.items() if isinstance(v, (str, int, float, bool)))
    if settings:
        lines[-1] += "  "
        lines.append(f"**Settings:** {_md(settings)}")
    if not doc.summary:
        lines += ["", "_No configuration was benchmarked._"]
    for summary, samples in _summary_for(doc):
        c = summary.config
        title = [c.model, c.format, c.device or "auto device",
                 f"{c.threads} threads" if c.threads else "default threads",
                 f"ctx {c.ctx}" if c.ctx else "default ctx"]
        if c.concurrency > 1:
            title.append(f"{c.concurrency} concurrent requests")
        lines += ["", f"### {_md(' · '.join(title))}", ""]
        prompt = token_count([s.prompt_tokens for s in samples], c.prompt_tokens)
        gen = token_count([s.gen_tokens for s in samples], c.gen_tokens)
        requested = "" if (prompt, gen) == (str(c.prompt_tokens), str(c.gen_tokens)) else \
            f" (requested {c.prompt_tokens}/{c.gen_tokens})"
        lines.append(f"Tokens: prompt {prompt}, generated {gen}{requested}"
                     f" · device used: {_md(devices_used(samples, c))} · {len(samples)} run(s)")
        if c.concurrency > 1:
            lines[-1] += "  "
            peak = token_count([s.peak_streams for s in samples if s.peak_streams is not None], c.concurrency)
            lines.append(f"Concurrency: {c.concurrency} requests at once (the tokens above are each one's)"
                         f" · at most {peak} generating together (1: they queued)")
        if not summary.figures:
            lines += ["", "_No successful run._"]
            continue
        lines += ["", "| figure | median ± stdev | min | max |", "|:--|--:|--:|--:|"]
        for figure, stats in summary.figures.items():
            label = figure_label(figure, c) + (" ⚠️" if figure in summary.unstable else "")
            lines.append(f"| {label} | {_median_stdev(figure, stats)} | {format_value(figure, stats.min)}"
                         f" | {format_value(figure, stats.max)} |")
        if summary.unstable:
            names = ", ".join(figure_label(f, c) for f in summary.unstable)
            lines += ["", f"> ⚠️ Unstable: {names} ({UNSTABLE_RULE})."]
    return "\n".join(lines) + "\n"
