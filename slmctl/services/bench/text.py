"""The terminal report of ``slmctl bench``: a table of medians and a bar chart (:func:`to_text`).

Plain text (fine in CI logs); ``color=True`` only adds ANSI colours. When a configuration ran N > 1
concurrent requests (``--concurrency``) the table gets the concurrency columns (N, TTFT p50 and p95,
per-stream and aggregate generation tokens/s) and the chart shows aggregate tokens/s, the figure that
sizes a machine; without one, both read exactly as before ``--concurrency`` existed. A single-request
row of such a table shows its own aggregate (its generated tokens over its time from prompt to last
token) and its time to first token as p50 and p95, so the rows compare directly.
"""

from __future__ import annotations

import io
import statistics
from collections.abc import Sequence

from rich.markup import escape

from slmctl.services.bench.model import BenchDocument, ConfigSummary, Sample
from slmctl.services.bench.report import (config_labels, devices_used, format_date, format_value, machine_line,
                                          samples_of, token_count)
from slmctl.services.bench.stats import UNSTABLE_RULE

TEXT_COLUMNS = ["MODEL", "FORMAT", "DEVICE", "THREADS", "CTX", "P/G TOKENS", "LOAD MS", "TTFT MS",
                "PROMPT TOK/S", "GEN TOK/S", "PEAK RSS"]
_TEXT_FIGURES = ["load_ms", "ttft_ms", "prompt_tps", "gen_tps", "peak_rss"]

#: The columns (and figures) of a table with concurrent configurations.
CONCURRENCY_COLUMNS = ["MODEL", "FORMAT", "DEVICE", "THREADS", "CTX", "P/G TOKENS", "N", "LOAD MS",
                       "TTFT P50 MS", "TTFT P95 MS", "PROMPT TOK/S", "STREAM TOK/S", "AGG TOK/S", "PEAK RSS"]
_CONCURRENCY_FIGURES = ["load_ms", "ttft_ms", "ttft_p95_ms", "prompt_tps", "gen_tps", "agg_tps", "peak_rss"]
BAR = "█"


def has_concurrency(doc: BenchDocument) -> bool:
    """Whether any configuration of ``doc`` ran several requests at once."""
    return any(summary.config.concurrency > 1 for summary in doc.summary)


def single_request_aggregate(samples: Sequence[Sample]) -> float | None:
    """The aggregate generation rate of single-request samples (median): generated tokens over the time
    from the prompt to the last token, what ``agg_tps`` measures for N requests. None without samples."""
    rates = [s.gen_tokens / ((s.ttft_ms + s.gen_ms) / 1000) for s in samples if s.ttft_ms + s.gen_ms > 0]
    return float(statistics.median(rates)) if rates else None


def figure_text(summary: ConfigSummary, samples: Sequence[Sample], figure: str) -> tuple[float | None, str]:
    """The median of ``figure`` for the table (``!`` when unstable, ``-`` when not measured); a
    single-request configuration answers the concurrency figures from its own samples."""
    stats = summary.figures.get(figure)
    if stats is not None:
        return stats.median, format_value(figure, stats.median) + ("!" if figure in summary.unstable else "")
    if summary.config.concurrency == 1 and figure == "agg_tps":
        value = single_request_aggregate(samples)
    elif summary.config.concurrency == 1 and figure == "ttft_p95_ms" and "ttft_ms" in summary.figures:
        return figure_text(summary, samples, "ttft_ms")  # one request at a time: its p95 is its p50
    else:
        value = None
    return value, "-" if value is None else format_value(figure, value)


def _text_rows(doc: BenchDocument, concurrency: bool) -> list[list[str]]:
    rows = []
    for summary in doc.summary:
        samples = samples_of(doc, summary.key)
        c = summary.config
        tokens = (f"{token_count([s.prompt_tokens for s in samples], c.prompt_tokens)}/"
                  f"{token_count([s.gen_tokens for s in samples], c.gen_tokens)}")
        row = [c.model, c.format, devices_used(samples, c), str(c.threads or "auto"), str(c.ctx or "auto"), tokens]
        if concurrency:
            row.append(str(c.concurrency))
        for figure in _CONCURRENCY_FIGURES if concurrency else _TEXT_FIGURES:
            row.append(figure_text(summary, samples, figure)[1])
        rows.append(row)
    return rows


def _bar_chart(doc: BenchDocument, width: int, figure: str, title: str) -> list[str]:
    labels = config_labels([s.config for s in doc.summary])
    cells = [figure_text(summary, samples_of(doc, summary.key), figure) for summary in doc.summary]
    values = [value for value, _ in cells]
    texts = [text for _, text in cells]
    label_width = min(max(len(label) for label in labels), max(8, width * 2 // 5))
    value_width = max(len(t) for t in texts)
    bar_width = max(10, width - label_width - value_width - 4)
    top = max((v for v in values if v is not None), default=0.0)
    lines = [title]
    for label, value, text in zip(labels, values, texts):
        if len(label) > label_width:
            label = label[:label_width - 1] + "…"
        length = 0 if not value or top <= 0 else max(1, round(value / top * bar_width))
        lines.append(f"{label.ljust(label_width)}  {(BAR * length).ljust(bar_width)}  {text}".rstrip())
    return lines


def to_text(doc: BenchDocument, *, width: int = 80, color: bool = False) -> str:
    """The terminal report: a table (``!`` marks unstable figures) and a bar chart of generation tok/s
    (aggregate tok/s when a configuration ran concurrent requests).

    Plain text by default; ``color=True`` adds ANSI colours (rendered through rich), for a terminal.
    """
    title = f"slmctl bench · {format_date(doc.created_at)} · {machine_line(doc.machine)}"
    if not doc.summary:
        return title + "\nno configuration was benchmarked\n"
    concurrency = has_concurrency(doc)
    rows = _text_rows(doc, concurrency)
    columns = CONCURRENCY_COLUMNS if concurrency else TEXT_COLUMNS
    widths = [max(len(cell) for cell in col) for col in zip(columns, *rows)]
    plain: list[str] = [title, ""]
    styled: list[str] = [f"[bold]{escape(title)}[/bold]", ""]
    for index, row in enumerate([columns, *rows]):
        plain.append("   ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        styled.append(f"[bold]{escape(plain[-1])}[/bold]" if index == 0
                      else escape(plain[-1]).replace("!", "[bold yellow]![/bold yellow]"))
    if concurrency:
        chart = _bar_chart(doc, width, "agg_tps", "aggregate generation tokens/s, all streams (median)")
    else:
        chart = _bar_chart(doc, width, "gen_tps", "generation tokens/s (median)")
    plain += ["", *chart]
    styled += ["", f"[bold]{escape(chart[0])}[/bold]"]
    styled += [escape(line).replace(BAR, f"[green]{BAR}[/green]").replace("[/green][green]", "")
               for line in chart[1:]]
    if any(s.unstable for s in doc.summary):
        note = f"! unstable: {UNSTABLE_RULE}"
        plain += ["", note]
        styled += ["", f"[yellow]{escape(note)}[/yellow]"]
    return _ansi("\n".join(styled)) + "\n" if color else "\n".join(plain) + "\n"


def _ansi(markup: str) -> str:
    """Rich markup rendered to ANSI escape codes (the caller asked for colour: NO_COLOR is its business)."""
    from rich.console import Console

    buffer = io.StringIO()
    Console(file=buffer, force_terminal=True, color_system="standard", no_color=False, width=100_000,
            highlight=False, emoji=False, soft_wrap=True).print(markup, end="")
    return buffer.getvalue()
