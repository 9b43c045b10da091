"""The reference profile (reference.json) and the feature and prediction tracking it implies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from modeldeck_runtime.metrics import (
    VALUE_BUCKETS,
    CategoryCounter,
    FeatureGroup,
    PredictionTracker,
    VariantMetrics,
)
from modeldeck_runtime.protocol import FLOAT_DATATYPES
from modeldeck_runtime.signature import DYNAMIC, Signature

# Without a profile, the first columns of 2-D float inputs are tracked; more would make each
# scrape large and the hot path slower for wide models.
MAX_DEFAULT_FEATURES = 32


def load_profile(path: Path) -> dict[str, Any] | None:
    """Read reference.json if it exists; refuse one that does not follow the format."""
    if not path.exists():
        return None
    profile = orjson.loads(path.read_bytes())
    if not isinstance(profile, dict):
        raise ValueError(f"{path} must hold a JSON object")
    features = profile.get("features", [])
    if not isinstance(features, list):
        raise ValueError(f"{path}: 'features' must be a list")
    for feature in features:
        _check_feature(path, feature)
    prediction = profile.get("prediction")
    if prediction is not None:
        _check_feature(path, {"name": "prediction", "input": "", **prediction})
    return profile


def _check_feature(path: Path, feature: Any) -> None:
    if not isinstance(feature, dict) or not isinstance(feature.get("name"), str):
        raise ValueError(f"{path}: every feature needs a 'name'")
    name = feature["name"]
    kind = feature.get("kind")
    if kind == "numeric":
        edges = feature.get("edges")
        if not isinstance(edges, list) or not edges:
            raise ValueError(f"{path}: numeric feature '{name}' needs non-empty 'edges'")
        if not all(isinstance(edge, int | float) for edge in edges):
            raise ValueError(f"{path}: edges of feature '{name}' must be numbers")
    elif kind == "categorical":
        if not isinstance(feature.get("categories", {}), dict):
            raise ValueError(f"{path}: 'categories' of feature '{name}' must be an object")
    else:
        raise ValueError(f"{path}: feature '{name}' has kind {kind!r}, not numeric or categorical")
    index = feature.get("index")
    if index is not None and (type(index) is not int or index < 0):
        raise ValueError(f"{path}: 'index' of feature '{name}' must be a column number or null")


def configure_tracking(
    metrics: VariantMetrics, signature: Signature, profile: dict[str, Any] | None
) -> None:
    """Attach feature and prediction trackers to a version's metrics."""
    if profile and profile.get("features"):
        _profile_features(metrics, signature, profile["features"])
    else:
        _default_features(metrics, signature)
    metrics.prediction = _prediction_tracker(signature, (profile or {}).get("prediction"))


def _profile_features(
    metrics: VariantMetrics, signature: Signature, features: list[dict[str, Any]]
) -> None:
    columns: dict[str, tuple[list[str], list[int], list[list[float]]]] = {}
    for feature in features:
        input_name = feature.get("input")
        spec = signature.input_named(input_name) if isinstance(input_name, str) else None
        if spec is None:
            continue
        index = feature.get("index")
        width = spec.shape[-1] if spec.shape else DYNAMIC
        if index is not None and width != DYNAMIC and index >= width:
            continue
        if feature["kind"] == "categorical":
            known = [str(category) for category in feature.get("categories", {})]
            metrics.categories.append(CategoryCounter(feature["name"], input_name, index, known))
        elif index is None:
            metrics.feature_groups.append(
                FeatureGroup(input_name, [feature["name"]], None, [feature["edges"]])
            )
        else:
            names, indexes, bounds = columns.setdefault(input_name, ([], [], []))
            names.append(feature["name"])
            indexes.append(index)
            bounds.append(feature["edges"])
    for input_name, (names, indexes, bounds) in columns.items():
        metrics.feature_groups.append(FeatureGroup(input_name, names, indexes, bounds))


def _default_features(metrics: VariantMetrics, signature: Signature) -> None:
    for spec in signature.inputs:
        if spec.datatype not in FLOAT_DATATYPES or spec.shape is None or len(spec.shape) != 2:
            continue
        width = spec.shape[1]
        if width == DYNAMIC:
            continue
        count = min(width, MAX_DEFAULT_FEATURES)
        names = [f"{spec.name}[{column}]" for column in range(count)]
        metrics.feature_groups.append(
            FeatureGroup(spec.name, names, list(range(count)), [list(VALUE_BUCKETS)] * count)
        )


def _prediction_tracker(
    signature: Signature, prediction: dict[str, Any] | None
) -> PredictionTracker | None:
    prediction = prediction or {}
    tensors = {spec.name: spec for spec in signature.outputs if spec.is_tensor}
    name = prediction.get("output")
    if not isinstance(name, str) or name not in tensors:
        name = next(iter(tensors), None)
    if name is None:
        return None
    spec = tensors[name]
    kind = prediction.get("kind")
    if kind not in ("categorical", "numeric"):
        scores = spec.shape is not None and len(spec.shape) >= 2 and spec.shape[-1] > 1
        kind = "numeric" if spec.datatype in FLOAT_DATATYPES and not scores else "categorical"
    if kind == "categorical":
        classes = [str(category) for category in prediction.get("categories", {})]
        return PredictionTracker(name, "categorical", classes=classes)
    return PredictionTracker(name, "numeric", bounds=prediction.get("edges"))
