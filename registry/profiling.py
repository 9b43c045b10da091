"""The reference profile of a version's inputs, computed from a CSV of sample rows.

The runtime's version server reads the result as `reference.json` and compares live traffic with
it, so the format is fixed:

    {"rows": N,
     "features": [
        {"name", "input", "index", "kind": "numeric", "edges": [e0..ek], "counts": [c1..ck]},
        {"name", "input", "index", "kind": "categorical", "categories": {value: count, …}}],
     "prediction": null}

Numeric bins are (e(i-1), e(i)] with the first one closed, the way the runtime's `le` buckets
count; values outside the edges count in the end bins. Columns with at most ten distinct values
get one bin per value (edges half way between them). Memory stays bounded: quantiles come from a
fixed-size reservoir sample per column, exact bin counts from a second pass over the file when
the sample did not hold it all.
"""

from __future__ import annotations

import csv
import math
import random
import unicodedata
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from common.errors import ApplicationError
from registry.inspection import TensorInfo

MAX_COLUMNS = 1_000
MAX_BINS = 10
TOP_CATEGORIES = 50
OTHER = "__other__"
# Cells kept across every numeric column's sample; each column keeps at least 1 000.
_SAMPLE_BUDGET = 2_000_000
# Distinct values tracked across every categorical column; each column tracks at least 1 000.
_CATEGORY_BUDGET = 200_000
_MAX_HEADER_LENGTH = 200
_CATEGORICAL_TYPES = {onnx.TensorProto.STRING, onnx.TensorProto.BOOL}


def _refuse(message: str) -> ApplicationError:
    return ApplicationError(message, {"reference": [message]})


@dataclass
class _Feature:
    name: str
    input: str
    index: int | None
    categorical: bool
    sample: array = field(default_factory=lambda: array("d"))
    seen: int = 0
    categories: Counter = field(default_factory=Counter)
    pruned: int = 0
    max_tracked: int = 20_000


def _features_for(header: list[str], inputs: Sequence[TensorInfo]) -> list[_Feature]:
    """Map CSV columns to model inputs (the rule the runtime relies on)."""
    if not inputs:
        raise _refuse("The model has no inputs to profile.")
    single = inputs[0] if len(inputs) == 1 else None
    if single is not None and single.dims is not None and len(single.dims) == 2:
        width = single.dims[1]
        if width is not None and len(header) != width:
            raise _refuse(
                f"The model's input '{single.name}' has {width} columns but the reference CSV "
                f"has {len(header)}; give one CSV column per input column, in order."
            )
        categorical = single.elem_type in _CATEGORICAL_TYPES
        return [
            _Feature(name, single.name, index, categorical) for index, name in enumerate(header)
        ]
    by_name = {spec.name: spec for spec in inputs}
    if set(header) != set(by_name):
        expected = ", ".join(sorted(by_name))
        raise _refuse(
            f"The reference CSV's header must name the model's inputs exactly ({expected})."
        )
    return [
        _Feature(name, name, None, by_name[name].elem_type in _CATEGORICAL_TYPES) for name in header
    ]


def _check_header(header: list[str]) -> list[str]:
    if not header:
        raise _refuse("The reference CSV is empty.")
    if len(header) > MAX_COLUMNS:
        raise _refuse(
            f"The reference CSV has {len(header):,} columns; the limit is {MAX_COLUMNS:,}."
        )
    cleaned = [name.strip() for name in header]
    for name in cleaned:
        if not name:
            raise _refuse("Every column of the reference CSV needs a name in the header row.")
        if len(name) > _MAX_HEADER_LENGTH:
            raise _refuse(f"A column name is longer than {_MAX_HEADER_LENGTH} characters.")
        if any(unicodedata.category(char)[0] == "C" for char in name):
            raise _refuse("Column names must not contain control characters.")
    if len(set(cleaned)) != len(cleaned):
        raise _refuse("The reference CSV names a column twice.")
    return cleaned


def _lines(stream) -> Iterator[str]:
    for line in stream:
        if "\x00" in line:
            raise _refuse("The reference CSV contains NUL bytes; it is not a text file.")
        yield line


def _rows(path: Path) -> Iterator[list[str]]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as stream:
            yield from csv.reader(_lines(stream))
    except UnicodeDecodeError:
        raise _refuse("The reference CSV is not UTF-8 text.") from None
    except csv.Error as error:
        raise _refuse(f"The reference CSV cannot be read: {error}.") from None


def _number(text: str, feature: _Feature, row: int) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        shown = text[:40]
        raise _refuse(
            f"Reference CSV row {row}, column '{feature.name}': '{shown}' is not a number."
        ) from None
    return value if math.isfinite(value) else None


def _remember_category(feature: _Feature, value: str) -> None:
    feature.categories[value] += 1
    if len(feature.categories) > feature.max_tracked:
        # Keep memory bounded on high-cardinality columns: the rarest values join "other".
        keep = dict(feature.categories.most_common(feature.max_tracked // 2))
        feature.pruned += sum(feature.categories.values()) - sum(keep.values())
        feature.categories = Counter(keep)


def _numeric_edges(feature: _Feature) -> np.ndarray:
    """Up to MAX_BINS bins: one per value for columns with few distinct values (edges half way
    between them), else quantile bins with duplicate edges merged."""
    sample = np.asarray(feature.sample, dtype=np.float64)
    if sample.size == 0:
        raise _refuse(f"Reference CSV column '{feature.name}' has no numeric values.")
    distinct = np.unique(sample)
    if distinct.size == 1:
        # One distinct value: a single closed bin [v, v] keeps len(edges) == len(counts) + 1.
        return np.array([distinct[0], distinct[0]])
    if distinct.size <= MAX_BINS:
        middles = (distinct[:-1] + distinct[1:]) / 2
        return np.concatenate([distinct[:1], middles, distinct[-1:]])
    levels = np.arange(MAX_BINS + 1) / MAX_BINS
    return np.unique(np.quantile(sample, levels, method="inverted_cdf"))


def _numeric_profile(feature: _Feature, edges: np.ndarray, counts: np.ndarray) -> dict:
    return {
        "name": feature.name,
        "input": feature.input,
        "index": feature.index,
        "kind": "numeric",
        "edges": [float(edge) for edge in edges],
        "counts": [int(count) for count in counts],
    }


def bin_counts(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """How many values fall in each bin (e(i-1), e(i)], the first closed [e0, e1], as the
    runtime's `le` buckets count; values beyond the edges count in the end bins."""
    bins = len(edges) - 1
    positions = np.clip(np.searchsorted(edges, values, side="left") - 1, 0, bins - 1)
    return np.bincount(positions, minlength=bins)


def _categorical_profile(feature: _Feature) -> dict:
    top = sorted(feature.categories.items(), key=lambda item: (-item[1], item[0]))[:TOP_CATEGORIES]
    total = sum(feature.categories.values()) + feature.pruned
    categories = dict(top)
    categories[OTHER] = total - sum(count for _value, count in top)
    return {
        "name": feature.name,
        "input": feature.input,
        "index": feature.index,
        "kind": "categorical",
        "categories": categories,
    }


def _exact_counts(path: Path, features: list[_Feature], edges: dict[int, np.ndarray]) -> dict:
    """Second pass: exact bin counts for the columns whose sample did not hold every value."""
    totals = {column: np.zeros(len(edge) - 1, dtype=np.int64) for column, edge in edges.items()}
    buffers: dict[int, list[float]] = {column: [] for column in edges}
    flush_at = max(1_024, _SAMPLE_BUDGET // (4 * len(edges)))
    rows = _rows(path)
    next(rows)
    for row_number, row in enumerate(rows, start=2):
        if not row:
            continue
        for column, buffer in buffers.items():
            value = _number(row[column], features[column], row_number)
            if value is not None:
                buffer.append(value)
            if len(buffer) >= flush_at:
                totals[column] += bin_counts(edges[column], np.asarray(buffer))
                buffer.clear()
    for column, buffer in buffers.items():
        if buffer:
            totals[column] += bin_counts(edges[column], np.asarray(buffer))
    return totals


def profile_reference_csv(path: Path, *, inputs: Sequence[TensorInfo]) -> dict:
    """Stream the CSV once (twice for big files) and return the reference profile."""
    rows = _rows(path)
    header = _check_header(next(rows, []))
    features = _features_for(header, inputs)
    numeric = [i for i, feature in enumerate(features) if not feature.categorical]
    sample_size = max(1_000, _SAMPLE_BUDGET // max(1, len(numeric)))
    for feature in features:
        feature.max_tracked = max(1_000, _CATEGORY_BUDGET // max(1, len(features) - len(numeric)))
    chooser = random.Random(0)
    count = 0
    for row_number, row in enumerate(rows, start=2):
        if not row:
            continue
        if len(row) != len(features):
            raise _refuse(
                f"Reference CSV row {row_number} has {len(row)} values; the header has "
                f"{len(features)}."
            )
        count += 1
        for feature, text in zip(features, row, strict=True):
            if feature.categorical:
                _remember_category(feature, text)
                continue
            value = _number(text, feature, row_number)
            if value is None:
                continue
            feature.seen += 1
            if len(feature.sample) < sample_size:
                feature.sample.append(value)
            else:
                slot = chooser.randrange(feature.seen)
                if slot < sample_size:
                    feature.sample[slot] = value
    if count == 0:
        raise _refuse("The reference CSV has a header but no rows.")
    edges = {i: _numeric_edges(features[i]) for i in numeric}
    counts = {
        i: bin_counts(edges[i], np.asarray(features[i].sample))
        for i in numeric
        if features[i].seen == len(features[i].sample)
    }
    # Columns whose sample could not hold every value get exact counts from a second pass.
    overflowed = {i: edges[i] for i in numeric if i not in counts}
    if overflowed:
        counts.update(_exact_counts(path, features, overflowed))
    profiles = [
        _categorical_profile(feature)
        if feature.categorical
        else _numeric_profile(feature, edges[index], counts[index])
        for index, feature in enumerate(features)
    ]
    return {"rows": count, "features": profiles, "prediction": None}
