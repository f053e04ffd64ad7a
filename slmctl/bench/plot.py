"""``slmctl bench --plot``: a PNG chart of a benchmark through matplotlib (an optional extra).

Owns the picture only: generation tokens/s per configuration (median bars, min-max error bars) and
prompt tokens/s as a second panel. matplotlib is imported inside :func:`write_plot`, so slmctl works
without it; the Agg canvas is used directly (no pyplot, no global backend switch, no display needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slmctl.bench.model import BenchDocument, ConfigSummary
from slmctl.bench.report import config_labels, format_date, machine_line
from slmctl.errors import OperationFailed, UsageError

_PANELS = [("gen_tps", "generation tokens/s (median, min-max)", "#2a9d8f"),
           ("prompt_tps", "prompt tokens/s (median, min-max)", "#457b9d")]


def _panel(ax: Any, summaries: list[ConfigSummary], labels: list[str] | None, figure: str, title: str,
           colour: str) -> None:
    positions = list(range(len(summaries)))
    medians, low, high = [], [], []
    for summary in summaries:
        stats = summary.figures.get(figure)
        medians.append(stats.median if stats else 0.0)
        low.append(stats.median - stats.min if stats else 0.0)
        high.append(stats.max - stats.median if stats else 0.0)
    ax.barh(positions, medians, xerr=[low, high], color=colour, capsize=4, ecolor="#333333")
    ax.set_yticks(positions)
    if labels is not None:
        ax.set_yticklabels(labels)
        ax.invert_yaxis()  # first configuration on top, as in the text table (shared with the other panel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    top = max((m + h for m, h in zip(medians, high)), default=0.0)
    for position, median, spread, summary in zip(positions, medians, high, summaries):
        if figure not in summary.figures:
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
    fig = Figure(figsize=(11, 1.6 + 0.7 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(f"slmctl bench · {format_date(doc.created_at)}\n{machine_line(doc.machine)}", fontsize=10)
    axes = fig.subplots(1, len(_PANELS), sharey=True, squeeze=False)[0]
    if not summaries:
        for ax in axes:
            ax.text(0.5, 0.5, "no configuration", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
    else:
        for index, (ax, (figure, title, colour)) in enumerate(zip(axes, _PANELS)):
            _panel(ax, summaries, labels if index == 0 else None, figure, title, colour)
    try:
        fig.savefig(Path(path), format="png", dpi=120)
    except OSError as exc:
        raise OperationFailed(f"cannot write the plot to {path}: {exc.strerror or exc}") from exc
