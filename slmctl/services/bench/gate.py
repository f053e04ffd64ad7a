"""The regression gate of ``slmctl bench --baseline FILE --max-regression 5%``.

Owns reading a baseline document, matching configurations by ``ConfigSummary.key`` and deciding which
figures got worse. A figure *regresses* when both hold:

* it is worse (direction from ``ALL_FIGURES``, the concurrency figures of N > 1 requests included) by
  more than ``max_regression``, a fraction of the baseline median (``0.05`` = 5%);
* the difference of the medians exceeds the measured noise, ``NOISE_FACTOR * sqrt(stdev_a^2 + stdev_b^2)``
  (2 standard deviations of the difference), so a noisy machine does not fail the gate by chance.

Keys name the number of concurrent requests only when it is above 1 (``...|g32|n4``), so a baseline
older than ``--concurrency`` matches the single-request configurations. Configurations present on one
side only are not failures by themselves: :func:`unmatched` lists them separately (text and JSON
reports). But a gate that matched *no* configuration compared nothing and must not pass:
:func:`require_match` raises :class:`NothingCompared` (exit code 8). Figures missing on either side (no
successful run) are not compared.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from slmctl.errors import InvalidModelFile, NothingCompared, UsageError
from slmctl.services.bench.model import ALL_FIGURES, SCHEMA_VERSION, BenchDocument
from slmctl.services.bench.report import FIGURE_LABELS, format_with_unit

NOISE_FACTOR = 2.0


@dataclass(frozen=True)
class Regression:
    """A figure of a configuration that got worse than the baseline beyond threshold and noise."""

    key: str
    figure: str
    baseline_median: float
    current_median: float
    change: float  # signed relative change, (current - baseline) / baseline; + is up, - is down
    noise: float   # the difference the measured spread alone could explain (same unit as the figure)

    @property
    def higher_is_better(self) -> bool:
        return ALL_FIGURES[self.figure]


@dataclass(frozen=True)
class Unmatched:
    """Configuration keys found in only one of the two documents."""

    only_current: list[str] = field(default_factory=list)
    only_baseline: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.only_current or self.only_baseline)


def _relative_change(baseline: float, current: float) -> float:
    if baseline == 0:
        return 0.0 if current == baseline else math.copysign(math.inf, current - baseline)
    return (current - baseline) / abs(baseline)


def compare(current: BenchDocument, baseline: BenchDocument, max_regression: float) -> list[Regression]:
    """The regressions of ``current`` against ``baseline``, in the order of ``current``'s summary."""
    if max_regression < 0 or math.isnan(max_regression):
        raise UsageError(f"invalid regression threshold {max_regression!r}", "use a fraction such as 0.05 or 5%")
    base = {summary.key: summary for summary in baseline.summary}
    found: list[Regression] = []
    for summary in current.summary:
        old = base.get(summary.key)
        if old is None:
            continue
        for figure, higher_is_better in ALL_FIGURES.items():
            now_stats, old_stats = summary.figures.get(figure), old.figures.get(figure)
            if now_stats is None or old_stats is None:
                continue
            change = _relative_change(old_stats.median, now_stats.median)
            worse_by = -change if higher_is_better else change
            noise = NOISE_FACTOR * math.hypot(now_stats.stdev, old_stats.stdev)
            if worse_by > max_regression and abs(now_stats.median - old_stats.median) > noise:
                found.append(Regression(key=summary.key, figure=figure, baseline_median=old_stats.median,
                                        current_median=now_stats.median, change=change, noise=noise))
    return found


def unmatched(current: BenchDocument, baseline: BenchDocument) -> Unmatched:
    """The configurations that cannot be compared because only one document has them."""
    now = [s.key for s in current.summary]
    old = [s.key for s in baseline.summary]
    now_set, old_set = set(now), set(old)
    return Unmatched(only_current=[k for k in now if k not in old_set],
                     only_baseline=[k for k in old if k not in now_set])


def matched(current: BenchDocument, baseline: BenchDocument) -> list[str]:
    """The configuration keys of ``current`` that the baseline has too (the ones the gate compares)."""
    old = {s.key for s in baseline.summary}
    return [s.key for s in current.summary if s.key in old]


def require_match(current: BenchDocument, baseline: BenchDocument, *, source: object = "the baseline") -> None:
    """Raise :class:`NothingCompared` when no configuration of ``current`` is in ``baseline``."""
    if matched(current, baseline):
        return
    runs, olds = len(current.summary), len(baseline.summary)
    raise NothingCompared(
        f"the regression gate compared nothing: none of the {runs} configuration(s) of this run is among the "
        f"{olds} of the baseline {source} (recorded with other models or settings)",
        "run with the baseline's models and flags (its configurations are listed above), or record a new "
        "baseline with `slmctl bench ... --output FILE`")


_THRESHOLD = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(%?)\s*$")


def parse_threshold(text: str) -> float:
    """``"5%"`` or ``"0.05"`` -> ``0.05``. A bare number must be a fraction (at most 1)."""
    match = _THRESHOLD.match(str(text))
    if not match:
        raise UsageError(f"invalid regression threshold {text!r}", "write a percentage such as 5% or a fraction such as 0.05")
    value = float(match.group(1))
    if match.group(2):
        return value / 100
    if value > 1:
        raise UsageError(f"ambiguous regression threshold {text!r}: a bare number is a fraction",
                         f"write {match.group(1)}% for a percentage, or a fraction such as 0.05")
    return value


def load_document(path: Path) -> BenchDocument:
    """Read a result document (``slmctl bench --output`` / ``--json``) for use as a baseline."""
    path = Path(path)
    hint = "pass a file written by `slmctl bench --output FILE`"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise UsageError(f"baseline file not found: {path}", hint) from exc
    except IsADirectoryError as exc:
        raise UsageError(f"the baseline is a folder, not a file: {path}", hint) from exc
    except UnicodeDecodeError as exc:
        raise InvalidModelFile(f"{path} is not a benchmark result (not UTF-8 text)", hint) from exc
    except OSError as exc:
        raise UsageError(f"cannot read the baseline {path}: {exc.strerror or exc}", hint) from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidModelFile(f"{path} is not a benchmark result: invalid JSON ({exc})", hint) from exc
    if not isinstance(data, dict) or "schema_version" not in data:
        raise InvalidModelFile(f"{path} is not a benchmark result (no schema_version)", hint)
    version = data["schema_version"]
    if version != SCHEMA_VERSION:
        raise InvalidModelFile(
            f"{path} is a benchmark result of schema version {version}; this slmctl reads version {SCHEMA_VERSION}",
            "re-run the baseline with this version of slmctl")
    try:
        return BenchDocument.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "document"
        raise InvalidModelFile(f"{path} is not a valid benchmark result: {where}: {first['msg']}"
                               f" ({exc.error_count()} problem(s))", hint, details=str(exc)) from exc


def gate_text(regressions: list[Regression], unmatched: Unmatched | None = None, *,
              compared: int | None = None) -> str:
    """Names each figure that got worse and, when given, the configurations not compared on each side."""
    lines: list[str] = []
    if compared == 0:
        lines.append("no configuration matched the baseline: nothing was compared")
    elif regressions:
        lines.append(f"{len(regressions)} regression(s) against the baseline:")
        for r in regressions:
            label = FIGURE_LABELS.get(r.figure, (r.figure, ""))[0]
            direction = "higher" if r.higher_is_better else "lower"
            change = "n/a" if math.isinf(r.change) else f"{r.change:+.1%}"
            lines.append(f"  {r.key}: {label} ({r.figure}) {format_with_unit(r.figure, r.baseline_median)}"
                         f" -> {format_with_unit(r.figure, r.current_median)} ({change}, {direction} is better;"
                         f" noise ±{format_with_unit(r.figure, r.noise)})")
    else:
        lines.append("no regression against the baseline")
    if compared is not None and compared > 0:
        lines.append(f"compared {compared} configuration(s)")
    if unmatched:
        if unmatched.only_current:
            lines.append(f"{len(unmatched.only_current)} configuration(s) of this run not in the baseline"
                         " (not compared):")
            lines += [f"  {key}" for key in unmatched.only_current]
        if unmatched.only_baseline:
            lines.append(f"{len(unmatched.only_baseline)} configuration(s) only in the baseline (not run now):")
            lines += [f"  {key}" for key in unmatched.only_baseline]
    return "\n".join(lines) + "\n"


def gate_json(regressions: list[Regression], unmatched: Unmatched, *, compared: list[str],
              baseline: str | None, max_regression: float) -> dict[str, Any]:
    """The gate's verdict as a JSON-ready object (``slmctl bench --json --baseline``)."""
    return {
        "baseline": baseline,
        "max_regression": max_regression,
        "passed": bool(compared) and not regressions,
        "compared": list(compared),
        "regressions": [{"key": r.key, "figure": r.figure, "baseline_median": r.baseline_median,
                         "current_median": r.current_median,
                         "change": None if math.isinf(r.change) else r.change, "noise": r.noise,
                         "higher_is_better": r.higher_is_better} for r in regressions],
        "unmatched": {"only_current": list(unmatched.only_current),
                      "only_baseline": list(unmatched.only_baseline)},
    }
