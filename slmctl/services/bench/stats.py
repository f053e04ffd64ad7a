"""Statistics of a benchmark: turns the raw samples of each configuration into a ``ConfigSummary``.

Owns the numbers every reporter and the regression gate rely on: per figure (see ``FIGURES``) the
median, min, max, sample standard deviation and count, and the *unstable* rule below. Pure functions,
no I/O.

Unstable rule: with at least ``MIN_SAMPLES_TO_JUDGE`` (3) samples, a figure is *unstable* (its spread
is too wide to trust) when its coefficient of variation (sample stdev / mean) exceeds
``MAX_CV`` (10%) **or** its range ``(max - min) / median`` exceeds ``MAX_RANGE`` (25%). With fewer
samples the spread cannot be judged and nothing is flagged.

A configuration of N > 1 concurrent requests also has the ``CONCURRENCY_FIGURES`` (aggregate tokens/s,
TTFT p95); :func:`percentile` makes the per-request percentiles of one sample.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence

from slmctl.services.bench.model import CONCURRENCY_FIGURES, FIGURES, BenchConfig, ConfigSummary, FigureStats, Sample

#: Fewer samples than this are too few to judge a spread: nothing is flagged unstable.
MIN_SAMPLES_TO_JUDGE = 3
#: Largest coefficient of variation (stdev / mean) of a figure still trusted.
MAX_CV = 0.10
#: Largest range (max - min) relative to the median of a figure still trusted.
MAX_RANGE = 0.25

UNSTABLE_RULE = (f"spread too wide to trust: coefficient of variation > {MAX_CV:.0%} "
                 f"or (max - min) / median > {MAX_RANGE:.0%}, with {MIN_SAMPLES_TO_JUDGE}+ samples")


def summarize(values: Sequence[float]) -> FigureStats:
    """Median, min, max, sample standard deviation (0 for a single value) and count of ``values``.

    An empty sequence raises ``ValueError`` (a configuration without samples has no figures).
    """
    data = [float(v) for v in values]
    if not data:
        raise ValueError("cannot summarize an empty list of values")
    stdev = statistics.stdev(data) if len(data) >= 2 else 0.0
    return FigureStats(median=float(statistics.median(data)), min=min(data), max=max(data),
                       stdev=float(stdev), n=len(data))


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, linearly interpolated between the closest ranks (as
    numpy's default): ``percentile([10, 20, 30, 40], 50) == 25``; one value is every percentile of itself.

    An empty sequence or a ``q`` outside 0-100 raises ``ValueError``.
    """
    data = sorted(float(v) for v in values)
    if not data:
        raise ValueError("cannot take a percentile of an empty list of values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile out of range: {q}")
    rank = (len(data) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (rank - low)


def coefficient_of_variation(stats: FigureStats, mean: float) -> float:
    """``stdev / |mean|``; 0 when there is no spread, infinite for a spread around a zero mean."""
    if stats.stdev == 0:
        return 0.0
    return stats.stdev / abs(mean) if mean else math.inf


def relative_range(stats: FigureStats) -> float:
    """``(max - min) / |median|``; 0 when there is no spread, infinite around a zero median."""
    spread = stats.max - stats.min
    if spread == 0:
        return 0.0
    return spread / abs(stats.median) if stats.median else math.inf


def is_unstable(values: Sequence[float]) -> bool:
    """Whether ``values`` spread too wide to trust (the rule in the module docstring)."""
    if len(values) < MIN_SAMPLES_TO_JUDGE:
        return False
    stats = summarize(values)
    mean = statistics.fmean(float(v) for v in values)
    return coefficient_of_variation(stats, mean) > MAX_CV or relative_range(stats) > MAX_RANGE


def figure_values(samples: Iterable[Sample], figure: str) -> list[float]:
    """The values of one figure (a figure name, also a ``Sample`` field) across ``samples``; samples
    without it (``None``) are left out."""
    return [float(value) for sample in samples if (value := getattr(sample, figure)) is not None]


def figures_of(config: BenchConfig) -> list[str]:
    """The figures a configuration reports: ``FIGURES``, plus ``CONCURRENCY_FIGURES`` for N > 1 requests."""
    return [*FIGURES, *(CONCURRENCY_FIGURES if config.concurrency > 1 else ())]


def summarize_config(config: BenchConfig, samples: Sequence[Sample]) -> ConfigSummary:
    """The summary of one configuration: every figure of :func:`figures_of` plus the unstable ones.

    Only the samples of this configuration (``sample.config == config.key``) count, so the whole
    sample list may be passed. Without any sample (every repetition failed) ``figures`` is empty.
    """
    key = config.key
    own = [s for s in samples if s.config == key]
    figures: dict[str, FigureStats] = {}
    unstable: list[str] = []
    if own:
        for figure in figures_of(config):
            values = figure_values(own, figure)
            if not values:
                continue
            figures[figure] = summarize(values)
            if is_unstable(values):
                unstable.append(figure)
    return ConfigSummary(config=config, key=key, figures=figures, unstable=unstable)


def summarize_all(configs: Sequence[BenchConfig], samples: Sequence[Sample]) -> list[ConfigSummary]:
    """One summary per configuration, in the order of ``configs``."""
    return [summarize_config(config, samples) for config in configs]
