"""Report arithmetic over plain values: medians and percentiles, service level, age
buckets, daily series, weighted evaluation scores. No database, no clock: the store
gathers the values (`postroom.store.reports`), this computes, tests check it by hand.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

__all__ = [
    "AGE_BUCKETS",
    "Spread",
    "age_bucket",
    "daily_series",
    "percentile",
    "service_level",
    "spread",
    "weighted_score",
]


def percentile(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0-100) by linear interpolation between closest ranks (the
    "inclusive" method: the median of [1, 2, 3, 4] is 2.5); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Spread:
    """How long something took, over a set of interactions (seconds)."""

    count: int
    median: float | None
    p90: float | None
    mean: float | None


def spread(values: Iterable[float]) -> Spread:
    data = [float(v) for v in values if v is not None and v >= 0]
    return Spread(
        count=len(data),
        median=percentile(data, 50),
        p90=percentile(data, 90),
        mean=statistics.fmean(data) if data else None,
    )


def service_level(times: Iterable[float | None], within: float) -> float | None:
    """The share (0-1) of interactions answered within `within` seconds; an unanswered
    one (None) counts against it. None when there are none."""
    data = list(times)
    if not data:
        return None
    met = sum(1 for t in data if t is not None and t <= within)
    return met / len(data)


# (label, upper bound in seconds); the last has none.
AGE_BUCKETS: tuple[tuple[str, float], ...] = (
    ("under 1 h", 3600),
    ("1-4 h", 4 * 3600),
    ("4-24 h", 86400),
    ("1-3 days", 3 * 86400),
    ("over 3 days", math.inf),
)


def age_bucket(seconds: float) -> str:
    for label, bound in AGE_BUCKETS:
        if seconds < bound:
            return label
    return AGE_BUCKETS[-1][0]


def daily_series(days: Iterable[date], first: date, last: date) -> list[tuple[date, int]]:
    """How many of `days` fall on each day from `first` to `last`, zeros included."""
    counts = Counter(days)
    out = []
    day = first
    while day <= last:
        out.append((day, counts.get(day, 0)))
        day += timedelta(days=1)
    return out


def weighted_score(items: Iterable[tuple[int, int, int]]) -> float:
    """(score, max_score, weight) per criterion → 0-100: each criterion's share of its
    maximum, weighted. Raises ValueError for a score outside 0..max or no weight at all."""
    total_weight = 0
    acc = 0.0
    for score, maximum, weight in items:
        if maximum < 1 or weight < 0 or not 0 <= score <= maximum:
            raise ValueError(f"score {score} outside 0..{maximum}")
        acc += weight * score / maximum
        total_weight += weight
    if total_weight == 0:
        raise ValueError("no weighted criterion")
    return round(100 * acc / total_weight, 1)
