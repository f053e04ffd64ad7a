"""``slmctl bench --plot``: a PNG chart of a benchmark through matplotlib (an optional extra).

Owns the picture only: generation tokens/s per configuration (median bars, min-max error bars) and
prompt tokens/s as a second panel; with concurrent configurations (``--concurrency``) a first panel of
aggregate generation tokens/s (a single-request row: its own, see :mod:`slmctl.services.bench.text`).
matplotlib is imported inside :func:`write_plot`, so slmctl works without it; the Agg canvas is used
directly (no pyplot, no global backend switch, no display needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slmctl.errors import OperationFailed, UsageError
from slmctl.services.bench.model import BenchDocument, ConfigSummary, Sample
from slmctl.services.bench.report import config_labels, format_date, machine_line, samples_of

_PANELS = [("gen_tps", "generation tokens/s (median, min-max)", "#2a9d8f"),
           ("prompt_tps", "prompt tokens/s (median, min-max)", "#457b9d")]
_AGGREGATE = ("agg_tps", "aggregate generation tokens/s (median, min-max)", "#e76f51")


def _bar(summary: ConfigSummary, samples: list[Sample], figure: str) -> tuple[float, float, float] | None:
    """``(median, median - min, max - median)`` of a figure, or None when it has no value."""
    stats = summary.figures.get(figure)
    if stats is not None:
        return stats.median, stats.median - stats.min, stats.max - stats.median
    if figure == "agg_tps" and summary.config.concurrency == 1:
        from slmctl.services.bench.text import single_request_aggregate

        value = single_request_aggregate(samples)
        return None if value is None else (value, 0.0, 0.0)
    return None


def _panel(ax: Any, doc: BenchDocument, labels: list[str] | None, figure: str, title: str, colour: str) -> None:
    summaries = list(doc.summary)
    positions = list(range(len(summaries)))
    bars = [_bar(summary, samples_of(doc, summary.key), figure) for summary in summaries]
    medians = [bar[0] if bar else 0.0 for bar in bars]
    low = [bar[1] if bar else 0.0 for bar in bars]
    high = [bar[2] if bar else 0.0 for bar in bars]
    ax.barh(positions, medians, xerr=[low, high], color=colour, capsize=4, ecolor="#333333")
    ax.set_yticks(positions)
    if labels is not None:
        ax.set_yticklabels(labels)
        ax.invert_yaxis()  # first configuration on top, as in the text table (shared with the other panel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    top = max((m + h for m, h in zip(medians, high)), default=0.0)
    for position, median, spread, summary, bar in zip(positions, medians, high, summaries, bars):
        if bar is None:
            text = "no result"
        else:
            text = f"{median:.1f}" + ("  (unstable)" if figure in summary.unstable else "")
        ax.text(median + spread + top * 0.02, position, text, va="center", fontsize=8)
    if top > 0:
        ax.set_xlim(0, top * 1.35)


def write_plot(doc: BenchDocument, path: Path) -> None:
    """Write the PNG chart of ``doc`` to ``path``.

    Raises ``UsageError`` when matplotlib is not installed, ``OperationFailed`` when the file cannot
    be written.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise UsageError("--plot needs matplotlib", "pip install 'slmctl[plot]'") from exc

    summaries = list(doc.summary)
    labels = config_labels([s.config for s in summaries]) if summaries else []
    rows = max(1, len(summaries))
    panels = list(_PANELS)
    if any(s.config.concurrency > 1 for s in summaries):
        panels = [_AGGREGATE, ("gen_tps", "generation tokens/s per stream (median, min-max)", panels[0][2]),
                  *panels[1:]]
    fig = Figure(figsize=(5.5 * len(panels), 1.6 + 0.7 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(f"slmctl bench · {format_date(doc.created_at)}\n{machine_line(doc.machine)}", fontsize=10)
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    if not summaries:
        for ax in axes:
            ax.text(0.5, 0.5, "no configuration", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
    else:
        for index, (ax, (figure, title, colour)) in enumerate(zip(axes, panels)):
            _panel(ax, doc, labels if index == 0 else None, figure, title, colour)
    try:
        fig.savefig(Path(path), format="png", dpi=120)
    except OSError as exc:
        raise OperationFailed(f"cannot write the plot to {path}: {exc.strerror or exc}") from exc
