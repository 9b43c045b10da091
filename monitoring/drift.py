"""Drift statistics between a version's reference profile and its live histograms (pure numpy).

Numeric features: Population Stability Index (PSI, with a small epsilon for empty bins) and the
1-D Wasserstein distance on bin representatives, normalised by the reference's interquartile
range (or its range when the IQR is zero). Categorical features: Jensen–Shannon distance (base 2,
so it lies in [0, 1]) and PSI. A feature drifts when its effect size passes the threshold (PSI for
numeric, JS for categorical); the dataset drifts when the share of drifting features does.

Live histograms use Prometheus `le` buckets over the profile's edges: (-inf, e0], (e0, e1], …,
(eK, +inf). A profile gives its counts either in that layout (len(edges) + 1 counts) or, as the
registry writes them, one count per bin between edges (len(edges) - 1 counts) with values beyond
the edges counted in the end bins; then the live tails are folded into the end bins the same way.
Bins must be closed on the right, as `le` buckets are: a profile counted with [ei, ei+1) bins
differs from live traffic only for values exactly on an edge (which matters for integer-valued
features).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from monitoring import histograms

EPSILON = 1e-4
OTHER = "__other__"


@dataclass(frozen=True)
class Thresholds:
    """Effect sizes above which a feature (or the dataset) counts as drifting."""

    psi: float = 0.2
    js_distance: float = 0.1
    dataset_share: float = 0.3
    min_rows: int = 100


@dataclass(frozen=True)
class AlignedNumeric:
    """Reference and live counts over the same intervals, with a representative point each."""

    lowers: np.ndarray
    uppers: np.ndarray
    points: np.ndarray
    reference: np.ndarray
    live: np.ndarray


def proportions(counts: Sequence[float]) -> np.ndarray:
    """Counts as shares of their total (all zero when the total is zero)."""
    array = np.asarray(counts, dtype=np.float64)
    total = array.sum()
    return array / total if total > 0 else array


def psi(reference: Sequence[float], live: Sequence[float], epsilon: float = EPSILON) -> float:
    """Population Stability Index: sum((live - ref) * ln(live / ref)) over bins."""
    expected = proportions(reference)
    actual = proportions(live)
    expected = np.where(expected > 0, expected, epsilon)
    actual = np.where(actual > 0, actual, epsilon)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def js_distance(reference: Sequence[float], live: Sequence[float]) -> float:
    """Jensen–Shannon distance, base 2 (the square root of the divergence), in [0, 1]."""
    p = proportions(reference)
    q = proportions(live)
    if not p.sum() or not q.sum():
        return 0.0
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / m[mask])))

    return math.sqrt(max((kl(p) + kl(q)) / 2, 0.0))


def wasserstein(
    points: Sequence[float], reference: Sequence[float], live: Sequence[float]
) -> float:
    """1-D Wasserstein (earth mover's) distance between two weightings of the same points."""
    order = np.argsort(np.asarray(points, dtype=np.float64), kind="stable")
    x = np.asarray(points, dtype=np.float64)[order]
    difference = np.cumsum(proportions(reference)[order] - proportions(live)[order])
    return float(np.sum(np.abs(difference[:-1]) * np.diff(x)))


def interquartile_scale(aligned: AlignedNumeric) -> float:
    """The reference's IQR (bins read as uniform), else its range, else 1."""
    cumulative = np.concatenate([[0.0], np.cumsum(proportions(aligned.reference))])
    boundaries = np.concatenate([aligned.lowers[:1], aligned.uppers])
    if cumulative[-1] > 0:
        q25, q75 = np.interp([0.25, 0.75], cumulative, boundaries)
        if q75 - q25 > 0:
            return float(q75 - q25)
    spread = float(boundaries[-1] - boundaries[0])
    return spread if spread > 0 else 1.0


def _intervals(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper ends of the le-buckets over `edges`, tails as wide as their neighbour."""
    first_width = edges[1] - edges[0] if edges.size > 1 else 1.0
    last_width = edges[-1] - edges[-2] if edges.size > 1 else 1.0
    lowers = np.concatenate([[edges[0] - first_width], edges])
    uppers = np.concatenate([edges, [edges[-1] + last_width]])
    return lowers, uppers


def align_numeric(feature: dict, live: dict | None) -> AlignedNumeric:
    """Reference and live counts of one numeric feature over common intervals."""
    edges = np.asarray(sorted(float(edge) for edge in feature["edges"]), dtype=np.float64)
    reference = np.asarray(feature.get("counts", []), dtype=np.float64)
    live_counts = (
        histograms.rebin(live, edges.tolist()).astype(np.float64)
        if live and live.get("counts")
        else np.zeros(edges.size + 1)
    )
    lowers, uppers = _intervals(edges)
    if reference.size == edges.size - 1 and edges.size > 1:
        # Registry layout: values beyond the edges count in the end bins, so fold the live
        # `<= e0` and `> eK` buckets into the first and last bins.
        bins = edges.size - 1
        folded = live_counts[1 : bins + 1].copy()
        folded[0] += live_counts[0]
        folded[-1] += live_counts[bins + 1]
        live_counts = folded
        lowers, uppers = edges[:-1], edges[1:]
    elif reference.size != edges.size + 1:
        raise ValueError(
            f"feature {feature.get('name')!r}: {reference.size} counts do not fit "
            f"{edges.size} edges"
        )
    return AlignedNumeric(lowers, uppers, (lowers + uppers) / 2, reference, live_counts)


def _bin_labels(aligned: AlignedNumeric) -> list[str]:
    """Readable names of the bins: the first is open below, the last open above."""
    last = aligned.points.size - 1
    labels = []
    for index, (lower, upper) in enumerate(zip(aligned.lowers, aligned.uppers, strict=True)):
        if index == 0:
            labels.append(f"≤ {upper:.4g}")
        elif index == last:
            labels.append(f"> {lower:.4g}")
        else:
            labels.append(f"({lower:.4g}, {upper:.4g}]")
    return labels


def numeric_statistics(feature: dict, live: dict | None, thresholds: Thresholds) -> dict:
    """Drift statistics of one numeric feature."""
    aligned = align_numeric(feature, live)
    live_count = int(aligned.live.sum())
    scale = interquartile_scale(aligned)
    value_psi = psi(aligned.reference, aligned.live)
    distance = wasserstein(aligned.points, aligned.reference, aligned.live)
    enough = live_count >= thresholds.min_rows
    return {
        "name": feature["name"],
        "kind": "numeric",
        "live_count": live_count,
        "reference_count": int(aligned.reference.sum()),
        "psi": round(value_psi, 6),
        "wasserstein": round(distance / scale, 6),
        "wasserstein_scale": scale,
        "js_distance": None,
        "score": round(value_psi, 6),
        "threshold": thresholds.psi,
        "enough_data": enough,
        "drifting": bool(enough and value_psi > thresholds.psi),
        "bins": _bin_labels(aligned),
        "reference": np.round(proportions(aligned.reference), 6).tolist(),
        "live": np.round(proportions(aligned.live), 6).tolist(),
    }


def categorical_statistics(feature: dict, live: dict | None, thresholds: Thresholds) -> dict:
    """Drift statistics of one categorical feature (or of predicted classes)."""
    reference_map = {str(key): float(value) for key, value in feature.get("categories", {}).items()}
    live_map = {str(key): float(value) for key, value in (live or {}).get("categories", {}).items()}
    names = list(reference_map) + sorted(set(live_map) - set(reference_map))
    reference = np.asarray([reference_map.get(name, 0.0) for name in names])
    live_counts = np.asarray([live_map.get(name, 0.0) for name in names])
    live_count = int(live_counts.sum())
    distance = js_distance(reference, live_counts) if names else 0.0
    enough = live_count >= thresholds.min_rows
    return {
        "name": feature["name"],
        "kind": "categorical",
        "live_count": live_count,
        "reference_count": int(reference.sum()),
        "psi": round(psi(reference, live_counts), 6) if names else 0.0,
        "wasserstein": None,
        "wasserstein_scale": None,
        "js_distance": round(distance, 6),
        "score": round(distance, 6),
        "threshold": thresholds.js_distance,
        "enough_data": enough,
        "drifting": bool(enough and distance > thresholds.js_distance),
        "bins": names,
        "reference": np.round(proportions(reference), 6).tolist(),
        "live": np.round(proportions(live_counts), 6).tolist(),
    }


def feature_statistics(feature: dict, live: dict | None, thresholds: Thresholds) -> dict:
    """Statistics of one profile entry, by its kind; none at all without live values."""
    if feature.get("kind") == "categorical":
        result = categorical_statistics(feature, live, thresholds)
    else:
        result = numeric_statistics(feature, live, thresholds)
    if result["live_count"] == 0:
        # Comparing with nothing would give an epsilon-sized, meaningless PSI.
        result.update(psi=None, wasserstein=None, js_distance=None, score=None, drifting=False)
    return result


def compare(
    profile: dict, live_features: dict, live_prediction: dict | None, thresholds: Thresholds
) -> dict:
    """A whole drift report: per-feature statistics, the prediction's, and the verdict.

    Features the profile names but the live data lacks count as having no data; profile entries
    that cannot be read are skipped with their reason.
    """
    features, skipped = [], []
    for feature in profile.get("features", []):
        try:
            features.append(
                feature_statistics(feature, live_features.get(feature["name"]), thresholds)
            )
        except (KeyError, ValueError, TypeError) as error:
            skipped.append({"name": str(feature.get("name", "?")), "reason": str(error)})
    prediction = None
    reference_prediction = profile.get("prediction")
    if reference_prediction and live_prediction:
        try:
            prediction = feature_statistics(
                {"name": "prediction", **reference_prediction}, live_prediction, thresholds
            )
        except (KeyError, ValueError, TypeError) as error:
            skipped.append({"name": "prediction", "reason": str(error)})
    rows = max((entry["live_count"] for entry in features), default=0)
    judged = [entry for entry in features if entry["enough_data"]]
    share = sum(entry["drifting"] for entry in judged) / len(judged) if judged else 0.0
    if rows < thresholds.min_rows or not judged:
        verdict = "insufficient_data"
    else:
        verdict = "drift" if share > thresholds.dataset_share else "no_drift"
    return {
        "rows": rows,
        "features": features,
        "prediction": prediction,
        "drifting_share": round(share, 6),
        "verdict": verdict,
        "skipped": skipped,
    }
