"""The confidence interval the streams benchmark prints for its median ratios (``benchmarks/_common.py``)."""

from __future__ import annotations

import itertools
import statistics
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from _common import median_interval  # noqa: E402


def coverage(n: int, k: int) -> float:
    """The chance that the k-th smallest and k-th largest of n draws hold the median (counted over every
    way n draws can fall below or above it)."""
    hits = sum(k <= sum(below) <= n - k for below in itertools.product((0, 1), repeat=n))
    return hits / 2 ** n


@given(st.lists(st.floats(0.5, 1.5), min_size=1, max_size=40))
def test_the_interval_holds_the_sample_median_and_is_made_of_samples(values: list[float]) -> None:
    bounds = median_interval(values)
    if len(values) < 6:
        assert bounds is None  # even the whole range holds the median with less than 95 % chance
        return
    assert bounds is not None
    low, high = bounds
    assert low in values and high in values
    assert low <= statistics.median(values) <= high


def test_the_interval_is_the_narrowest_order_statistics_pair_with_95_percent() -> None:
    for n in range(6, 17):
        ordered = list(range(n))
        low, high = median_interval(ordered)
        k = low + 1
        assert high == n - k  # symmetric: the k-th smallest and the k-th largest
        assert coverage(n, k) >= 0.95
        assert k == n // 2 or coverage(n, k + 1) < 0.95
    assert median_interval(list(range(16))) == (3, 12)  # 16 rounds: 4th smallest to 4th largest (97.9 %)
