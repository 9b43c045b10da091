"""Bucketed histograms as stored in rollups: adding them up and reading quantiles from them.

A histogram is `{"bounds": [b0, b1, ...], "counts": [c0, ..., cK]}` with Prometheus `le`
semantics: c0 counts values <= b0, ci values in (b(i-1), bi], and the last count the values above
the last bound (the +Inf bucket). Counts are per bucket, not cumulative.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np


def from_cumulative(pairs: Iterable[tuple[float, float]]) -> dict:
    """Turn Prometheus (le, cumulative count) pairs into a per-bucket histogram.

    A slightly inconsistent exposition (a bucket lower than the one before) is clamped to zero
    rather than producing a negative count.
    """
    ordered = sorted(pairs)
    bounds = [bound for bound, _ in ordered if math.isfinite(bound)]
    cumulative = [count for _, count in ordered]
    if not ordered or math.isfinite(ordered[-1][0]):
        # No +Inf bucket: nothing lies above the last bound.
        cumulative.append(cumulative[-1] if cumulative else 0.0)
    counts = np.diff(np.asarray(cumulative, dtype=np.float64), prepend=0.0)
    counts = np.maximum(np.rint(counts), 0).astype(np.int64)
    return {"bounds": bounds, "counts": counts.tolist()}


def total(histogram: dict | None) -> int:
    """How many values a histogram (or a categorical count) holds."""
    if not histogram:
        return 0
    if "categories" in histogram:
        return int(sum(histogram["categories"].values()))
    return int(sum(histogram.get("counts", ())))


def rebin(histogram: dict, bounds: Sequence[float]) -> np.ndarray:
    """Counts of `histogram` moved onto other bucket bounds (each bucket by its upper bound)."""
    source_bounds = list(histogram.get("bounds", ()))
    counts = np.asarray(histogram.get("counts", ()), dtype=np.int64)
    if list(bounds) == source_bounds:
        return counts.copy()
    uppers = np.asarray([*source_bounds, math.inf], dtype=np.float64)[: counts.size]
    indexes = np.searchsorted(np.asarray(bounds, dtype=np.float64), uppers, side="left")
    return np.bincount(indexes, weights=counts, minlength=len(bounds) + 1).astype(np.int64)


def merge(existing: dict | None, added: dict | None) -> dict:
    """The sum of two histograms (or two category counts); `existing`'s bounds win."""
    if not added:
        return dict(existing or {})
    if not existing:
        return {
            key: (dict(value) if isinstance(value, dict) else list(value))
            for key, value in added.items()
        }
    if "categories" in existing or "categories" in added:
        categories = dict(existing.get("categories", {}))
        for value, count in added.get("categories", {}).items():
            categories[value] = categories.get(value, 0) + int(count)
        return {"categories": categories}
    bounds = list(existing["bounds"])
    counts = np.asarray(existing["counts"], dtype=np.int64) + rebin(added, bounds)
    return {"bounds": bounds, "counts": counts.tolist()}


def merge_features(existing: dict | None, added: dict | None) -> dict:
    """Feature maps `{name: histogram}` added name by name."""
    result = dict(existing or {})
    for name, histogram in (added or {}).items():
        result[name] = merge(result.get(name), histogram)
    return result


def quantiles(bounds: Sequence[float], counts: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """Quantiles of many histograms at once, interpolating linearly inside the bucket.

    `counts` is (histograms × buckets); the answer is (histograms × levels), NaN where a histogram
    is empty. Like Prometheus' histogram_quantile: the first bucket starts at 0 when its bound is
    positive, and a quantile in the +Inf bucket is the last finite bound.
    """
    counts = np.atleast_2d(np.asarray(counts, dtype=np.float64))
    bounds_array = np.asarray(bounds, dtype=np.float64)
    result = np.full((counts.shape[0], len(levels)), np.nan)
    if not bounds_array.size:
        return result
    lowers = np.concatenate([[min(0.0, bounds_array[0])], bounds_array])
    uppers = np.concatenate([bounds_array, [bounds_array[-1]]])
    cumulative = np.cumsum(counts, axis=1)
    totals = cumulative[:, -1]
    filled = totals > 0
    for column, level in enumerate(levels):
        rank = level * totals
        # First bucket whose cumulative count reaches the rank.
        bucket = np.argmax(cumulative >= rank[:, None] - 1e-9, axis=1)
        below = np.where(bucket > 0, cumulative[np.arange(len(bucket)), bucket - 1], 0.0)
        inside = counts[np.arange(len(bucket)), bucket]
        fraction = np.where(inside > 0, (rank - below) / np.where(inside > 0, inside, 1.0), 1.0)
        lower, upper = lowers[bucket], uppers[bucket]
        value = lower + (upper - lower) * np.clip(fraction, 0.0, 1.0)
        # The +Inf bucket has no width to interpolate over.
        value = np.where(bucket >= bounds_array.size, bounds_array[-1], value)
        result[:, column] = np.where(filled, value, np.nan)
    return result


def quantile(histogram: dict | None, level: float) -> float | None:
    """One quantile of one histogram, None when it is empty."""
    if not histogram or not histogram.get("bounds") or total(histogram) == 0:
        return None
    value = quantiles(histogram["bounds"], np.asarray([histogram["counts"]]), [level])[0, 0]
    return None if math.isnan(value) else float(value)
