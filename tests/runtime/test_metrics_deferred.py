"""Deferred metrics recording counts exactly what a value-by-value reference counts.

VariantMetrics.record_batch keeps references and counts many batches in one pass later; these
tests feed the same random batches to it, to a recorder that flushes after every batch, and to
a plain Python reference written here, and compare every sample of the exposition.
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_left
from typing import Any

import numpy as np
import pytest
from modeldeck_runtime.metrics import (
    DURATION_BUCKETS,
    MAX_CLASSES,
    OTHER,
    PENDING_BATCHES,
    PENDING_BYTES,
    ROW_BUCKETS,
    VALUE_BUCKETS,
    CategoryCounter,
    FeatureGroup,
    PredictionTracker,
    ServingMetrics,
    VariantMetrics,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

# (input, feature names, columns or None for the whole input, bounds per feature)
GROUPS: list[tuple[str, list[str], list[int] | None, list[list[float]]]] = [
    # shared bounds over the first columns (the default features: a view of the batch)
    ("X", ["x0", "x1", "x2"], [0, 1, 2], [list(VALUE_BUCKETS)] * 3),
    # per-feature bounds, columns out of order; x5 is beyond the narrow batches
    ("X", ["x4", "x1b", "x5"], [4, 1, 5], [[-1, 0, 1], [0.5, 2, 3, 10], [0]]),
    # many per-feature bounds: large joined batches take the searchsorted-per-feature path
    ("X", ["x3", "x2b"], [3, 2], [list(np.linspace(-3, 3, 61)), list(np.linspace(-50, 50, 41))]),
    # every value of an input of any shape
    ("V", ["v"], None, [[-2, -1, 0, 1, 2]]),
]
# (feature, input, column or None for the whole input, known categories)
CATEGORIES: list[tuple[str, str, int | None, list[str]]] = [
    ("color", "C", 1, ["red", "green"]),  # a fixed list: anything else is __other__
    ("tag", "C", 0, []),  # strings, more than MAX_CLASSES distinct
    ("code", "K", 0, []),  # small integers, more than MAX_CLASSES distinct (bincount)
    ("big", "K", 1, []),  # negative and large integers (a sort)
    ("half", "X", 3, []),  # floats with NaN and infinities
    ("every", "K", None, []),  # every value of an input
]
# variant name: (output, kind, known classes, bounds)
PREDICTIONS: dict[str, tuple[str, str, list[str], list[float] | None]] = {
    "scores": ("scores", "categorical", [], None),  # argmax of per-class scores
    "label": ("label", "categorical", [], None),  # integer labels, more than MAX_CLASSES
    "name": ("name", "categorical", ["a", "b"], None),  # string labels, a fixed list
    "value": ("value", "numeric", [], [0.0, 0.5, 2.0, 10.0]),  # a regressor
    "signed": ("value", "numeric", [], None),  # a regressor, buckets below zero (no _sum)
}
# rows of float64 X (6 columns) more than PENDING_BYTES on their own: counted at once
HUGE_ROWS = PENDING_BYTES // 48 + 1000
ON_BOUNDS = [-1000.0, -10.0, -2.0, -1.0, -0.5, -0.0, 0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 1000.0]
FAMILIES = (
    "modeldeck_inference_duration_seconds",
    "modeldeck_batch_rows",
    "modeldeck_feature_value",
    "modeldeck_feature_category",
    "modeldeck_predictions",
    "modeldeck_prediction_value",
)


def configure(variant: VariantMetrics, name: str) -> None:
    """Attach the trackers of GROUPS, CATEGORIES and one prediction to a variant."""
    for input_name, names, columns, bounds in GROUPS:
        variant.feature_groups.append(FeatureGroup(input_name, names, columns, bounds))
    for feature, input_name, column, known in CATEGORIES:
        variant.categories.append(CategoryCounter(feature, input_name, column, known))
    output, kind, classes, bounds = PREDICTIONS[name]
    variant.prediction = PredictionTracker(output, kind, bounds=bounds, classes=classes)


class Buckets:
    """Value-by-value histogram: bisect per finite value, a plain running sum."""

    def __init__(self, bounds: Any) -> None:
        self.bounds = sorted({float(bound) for bound in bounds})
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0
        self.magnitude = 0.0

    def add(self, value: float) -> None:
        if math.isfinite(value):
            self.counts[bisect_left(self.bounds, value)] += 1
            self.total += value
            self.magnitude += abs(value)

    def samples(self, name: str, labels: dict[str, str], expected: dict, sums: dict) -> None:
        running = 0
        for bound, count in zip([*self.bounds, math.inf], self.counts, strict=True):
            running += count
            le = "+Inf" if bound == math.inf else floatToGoString(bound)
            expected[key(f"{name}_bucket", {**labels, "le": le})] = running
        expected[key(f"{name}_count", labels)] = running
        if self.bounds[0] >= 0:  # prometheus_client leaves out _sum below zero
            sums[key(f"{name}_sum", labels)] = (self.total, self.magnitude)


class Categories:
    """Value-by-value category counts with the cap: a new label gets a series while fewer than
    MAX_CLASSES are known and no fixed list was given."""

    def __init__(self, known: list[str]) -> None:
        self.counts = dict.fromkeys(known, 0)
        self.fixed = bool(known)

    def add(self, label: Any) -> None:
        label = label if isinstance(label, str) else str(label)
        if label not in self.counts and (self.fixed or len(self.counts) >= MAX_CLASSES):
            label = OTHER
        self.counts[label] = self.counts.get(label, 0) + 1


def argmax(scores: list[float]) -> int:
    """numpy's argmax of one row: the first NaN, else the first largest."""
    best = 0
    for index, score in enumerate(scores):
        if score != score:
            return index
        if score > scores[best]:
            best = index
    return best


class Reference:
    """What one variant must count, value by value."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.durations = Buckets(DURATION_BUCKETS)
        self.rows = Buckets(ROW_BUCKETS)
        self.features = {
            feature: Buckets(feature_bounds)
            for _, names, _, bounds in GROUPS
            for feature, feature_bounds in zip(names, bounds, strict=True)
        }
        self.categories = {feature: Categories(known) for feature, _, _, known in CATEGORIES}
        _, _, classes, bounds = PREDICTIONS[name]
        self.classes = Categories(classes)
        self.values = Buckets(bounds or VALUE_BUCKETS)

    def record(
        self, feeds: dict[str, np.ndarray], outputs: dict[str, Any], rows: Any, seconds: float
    ) -> None:
        self.durations.add(seconds)
        for count in [rows] if isinstance(rows, int) else rows:
            self.rows.add(count)
        for input_name, names, columns, _ in GROUPS:
            array = feeds.get(input_name)
            if array is None:
                continue
            if columns is None:
                for value in array.ravel().tolist():
                    self.features[names[0]].add(value)
                continue
            for row in table(array):
                if len(row) > max(columns):
                    for feature, column in zip(names, columns, strict=True):
                        self.features[feature].add(row[column])
        for feature, input_name, column, _ in CATEGORIES:
            array = feeds.get(input_name)
            if array is not None and column is None:
                for label in array.ravel().tolist():
                    self.categories[feature].add(label)
            elif array is not None:
                for row in table(array):
                    if len(row) > column:
                        self.categories[feature].add(row[column])
        output, kind, _, _ = PREDICTIONS[self.name]
        value = outputs.get(output)
        if not isinstance(value, np.ndarray):
            return
        if kind == "numeric":
            for number in value.ravel().tolist():
                self.values.add(number)
        elif value.dtype.kind == "f" and value.ndim >= 2 and value.shape[-1] > 1:
            for scores in value.reshape(-1, value.shape[-1]).tolist():
                self.classes.add(argmax(scores))
        else:
            for label in value.ravel().tolist():
                self.classes.add(label)

    def expected(self, labels: dict[str, str]) -> tuple[dict, dict, dict]:
        """Exact samples, sums (with the magnitude for their tolerance), category orders."""
        expected: dict = {}
        sums: dict = {}
        self.durations.samples("modeldeck_inference_duration_seconds", labels, expected, sums)
        self.rows.samples("modeldeck_batch_rows", labels, expected, sums)
        for feature, buckets in self.features.items():
            buckets.samples(
                "modeldeck_feature_value", {**labels, "feature": feature}, expected, sums
            )
        orders = {}
        for feature, categories in self.categories.items():
            for category, count in categories.counts.items():
                sample = {**labels, "feature": feature, "category": category}
                expected[key("modeldeck_feature_category_total", sample)] = count
            orders[feature] = list(categories.counts)
        if PREDICTIONS[self.name][1] == "numeric":
            self.values.samples("modeldeck_prediction_value", labels, expected, sums)
        else:
            for label, count in self.classes.counts.items():
                expected[key("modeldeck_predictions_total", {**labels, "class": label})] = count
            orders["prediction"] = list(self.classes.counts)
        return expected, sums, orders


def table(array: np.ndarray) -> list[list[Any]]:
    """The rows of a batch as the trackers read them: nothing from 1-D or empty arrays."""
    if array.ndim < 2 or not array.size:
        return []
    return array.reshape(array.shape[0], -1).tolist()


def key(name: str, labels: dict[str, str]) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def exposition(metrics: ServingMetrics) -> tuple[dict, dict]:
    """Samples of the compared families, and the order of category series per feature."""
    samples = {}
    orders: dict[tuple[str, str], list[str]] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        if family.name not in FAMILIES:
            continue
        for sample in family.samples:
            samples[key(sample.name, sample.labels)] = sample.value
            if sample.name == "modeldeck_feature_category_total":
                labels = sample.labels
                orders.setdefault((labels["variant"], labels["feature"]), []).append(
                    labels["category"]
                )
            elif sample.name == "modeldeck_predictions_total":
                labels = sample.labels
                orders.setdefault((labels["variant"], "prediction"), []).append(labels["class"])
    return samples, orders


def assert_same(metrics: ServingMetrics, references: dict[str, Reference]) -> None:
    """Every compared sample equals the reference's: counts exactly, sums to summation order."""
    samples, orders = exposition(metrics)
    expected: dict = {}
    sums: dict = {}
    for name, reference in references.items():
        labels = {"endpoint": "e", "version": "1", "variant": name, "component": "server"}
        exact, variant_sums, variant_orders = reference.expected(labels)
        expected |= exact
        sums |= variant_sums
        for feature, order in variant_orders.items():
            assert orders.get((name, feature), []) == order, (name, feature)
    assert set(samples) == set(expected) | set(sums)
    for sample, value in expected.items():
        assert samples[sample] == value, sample
    for sample, (total, magnitude) in sums.items():
        assert abs(samples[sample] - total) <= 1e-12 * (magnitude + 1), sample


def random_batch(generator: np.random.Generator, index: int) -> tuple[dict, dict, Any, float]:
    """Feeds, outputs, rows and seconds of one onnxruntime call, with every oddity in turn."""
    draw = generator.random()
    if draw < 0.6:
        rows = int(generator.integers(1, 9))
    elif draw < 0.9:
        rows = int(generator.integers(9, 65))
    elif draw < 0.998:
        rows = int(generator.integers(65, 301))
    else:
        rows = HUGE_ROWS
    shape = generator.random()
    width = 3 if shape < 0.08 else 6
    numbers = generator.standard_normal((rows, width)) * generator.choice([0.3, 3.0, 300.0])
    numbers[generator.random((rows, width)) < 0.03] = generator.choice([np.nan, np.inf, -np.inf])
    # values on a bound (exact in float32) fall in the bucket whose le is that bound
    on_bounds = generator.random((rows, width)) < 0.05
    numbers[on_bounds] = generator.choice(ON_BOUNDS, int(on_bounds.sum()))
    if width > 3:
        numbers[:, 3] = generator.choice([0.5, 1.5, 2.5, np.nan, np.inf, -1e30], rows)
    dtype = np.float64 if generator.random() < 0.1 or rows == HUGE_ROWS else np.float32
    x = numbers.astype(dtype)
    if 0.08 <= shape < 0.11:
        x = x.ravel()  # 1-D: no columns to read
    elif 0.11 <= shape < 0.13:
        x = x[:0]  # no rows
    feeds: dict[str, np.ndarray] = {"X": x}
    v_shape = generator.random()
    if v_shape < 0.4:
        feeds["V"] = generator.standard_normal(rows) * 2
    elif v_shape < 0.8:
        feeds["V"] = (generator.standard_normal((rows, 2)) * 2).astype(np.float32)
    elif v_shape < 0.85:
        feeds["V"] = np.array(generator.standard_normal())  # 0-D
    # else: this batch has no V
    # tags appear over time, so the first MAX_CLASSES to appear get a series
    tags = generator.integers(0, 40 + index // 10, rows)
    colors = generator.choice(["red", "green", "blue", "mauve"], rows)
    strings = np.empty((rows, 2), dtype=object)
    strings[:, 0] = [f"t{tag}" for tag in tags.tolist()]
    strings[:, 1] = colors.tolist()
    feeds["C"] = strings[:, :1] if generator.random() < 0.05 else strings
    codes = np.stack(
        [
            generator.integers(0, 30 + index // 15, rows),
            generator.choice([-5, 10**6, 3, 7, 2**40], rows),
        ],
        axis=1,
    )
    feeds["K"] = codes.astype(np.int64)
    scores = generator.standard_normal((rows, 4)).astype(np.float32)
    scores[generator.random((rows, 4)) < 0.01] = np.nan
    values = generator.standard_normal((rows, 1)).astype(np.float32) * 3
    values[generator.random((rows, 1)) < 0.03] = generator.choice([np.nan, np.inf, -np.inf])
    outputs = {
        "scores": scores,
        "label": generator.integers(0, 20 + index // 20, rows).astype(np.int64),
        "name": np.array(generator.choice(["a", "b", "c"], rows).tolist(), dtype=object),
        "value": values,
        "probabilities": [{"a": 0.5}] * rows,  # a sequence output: not an array
    }
    if generator.random() < 0.5:
        counts: Any = rows
    else:
        split = int(generator.integers(0, rows + 1))
        counts = [split, rows - split]  # requests batched together
    return feeds, outputs, counts, float(generator.exponential(0.003))


def test_deferred_counts_equal_a_value_by_value_reference(caplog):
    """Thousands of random batches: deferred, flushed-each-time and the reference agree."""
    caplog.set_level(logging.DEBUG, logger="modeldeck.metrics")
    generator = np.random.default_rng(20240601)
    deferred = ServingMetrics(endpoint="e", component="server")
    at_once = ServingMetrics(endpoint="e", component="server")
    references = {name: Reference(name) for name in PREDICTIONS}
    for name in PREDICTIONS:
        configure(deferred.variant("1", name), name)
        configure(at_once.variant("1", name), name)
    checkpoints = set(generator.integers(0, 3000, 8).tolist())
    for index in range(3000):
        feeds, outputs, rows, seconds = random_batch(generator, index)
        for name, reference in references.items():
            deferred.variant("1", name).record_batch(feeds, outputs, rows, seconds)
            at_once.variant("1", name).record_batch(feeds, outputs, rows, seconds)
            at_once.variant("1", name).flush()
            reference.record(feeds, outputs, rows, seconds)
        if index in checkpoints:
            # a scrape in the middle sees everything recorded so far
            assert_same(deferred, references)
    assert_same(deferred, references)
    assert_same(at_once, references)
    # every batch was counted as it should be, none by the one-by-one fallback
    assert not caplog.records
    # the stream did reach the cap in every kind of counter
    for reference in references.values():
        for feature in ("tag", "code"):
            assert OTHER in reference.categories[feature].counts
    assert OTHER in references["label"].classes.counts


def test_totals_and_scrapes_count_pending_batches():
    """A read between two flushes still sees every batch recorded."""
    metrics = ServingMetrics(endpoint="e", component="server")
    variant = metrics.variant("1", "scores")
    configure(variant, "scores")
    reference = Reference("scores")
    generator = np.random.default_rng(3)
    for index in range(5):
        feeds, outputs, rows, seconds = random_batch(generator, index)
        feeds["X"] = generator.standard_normal((4, 6)).astype(np.float32)
        variant.record_batch(feeds, outputs, rows, seconds)
        reference.record(feeds, outputs, rows, seconds)
    assert variant._pending_seconds  # white box: the batches are still pending
    group = variant.feature_groups[0]
    for feature, name in enumerate(group.names):
        counts, total = group.totals(feature)
        assert counts.tolist() == reference.features[name].counts
        assert total == pytest.approx(reference.features[name].total, rel=1e-12)
    assert_same(metrics, {"scores": reference})


def test_trackers_attached_later_count_only_later_batches():
    """As when counting at once: a tracker counts the batches recorded after it was attached."""
    metrics = ServingMetrics(endpoint="e", component="server")
    variant = metrics.variant("1", "v")
    variant.feature_groups.append(FeatureGroup("X", ["a"], [0], [[0.0]]))
    first = {"X": np.array([[-1.0], [1.0]])}
    second = {"X": np.array([[2.0], [3.0], [-4.0]])}
    variant.record_batch(first, {}, 2, 0.001)
    variant.feature_groups.append(FeatureGroup("X", ["b"], [0], [[0.0]]))
    variant.prediction = PredictionTracker("y", "numeric")
    variant.record_batch(second, {"y": np.array([5.0])}, 3, 0.001)
    a, b = variant.feature_groups
    assert a.totals(0)[0].tolist() == [2, 3]
    assert b.totals(0)[0].tolist() == [1, 2]
    assert variant.prediction.values.counts.sum() == 1
    assert variant.batch_rows.counts.sum() == 2


def test_pending_references_stay_bounded():
    """Never more than PENDING_BATCHES batches or PENDING_BYTES (plus one batch) are held."""
    variant = VariantMetrics("e", "1", "v", "server")
    configure(variant, "name")
    generator = np.random.default_rng(11)
    long_tag = np.array([["x" * 40_000, "red"]], dtype=object)  # few values, many bytes
    unknown = np.array([[object(), "red"]], dtype=object)  # objects of unknown size
    for index in range(3000):
        feeds, outputs, rows, seconds = random_batch(generator, index)
        if index % 7 == 0:
            feeds["C"] = long_tag
        elif index % 11 == 0:
            feeds["C"] = unknown
        before = variant._pending_bytes
        variant.record_batch(feeds, outputs, rows, seconds)
        assert len(variant._pending_seconds) < PENDING_BATCHES
        assert variant._pending_bytes <= PENDING_BYTES
        assert before <= PENDING_BYTES
    many = VariantMetrics("e", "1", "v", "server")
    configure(many, "label")
    feeds = {"X": np.zeros((1, 6), dtype=np.float32)}
    outputs = {"label": np.array([1])}
    for count in range(1, PENDING_BATCHES * 2):
        many.record_batch(feeds, outputs, 1, 0.001)
        assert len(many._pending_seconds) == count % PENDING_BATCHES


def test_a_batch_that_cannot_be_counted_loses_only_its_own_counts(caplog):
    """A numeric profile over strings fails on those batches only; the scrape still works."""
    metrics = ServingMetrics(endpoint="e", component="server")
    variant = metrics.variant("1", "v")
    variant.feature_groups.append(FeatureGroup("S", ["s"], None, [[0.0, 1.0]]))
    variant.prediction = PredictionTracker("y", "numeric")
    good = {"S": np.array([0.5, 2.0])}
    bad = {"S": np.array(["red", "blue"], dtype=object)}
    numbers = {"S": np.array(["0.25", "7"], dtype=object)}  # joins with bad: that pass fails
    outputs = {"y": np.array([0.25])}
    with caplog.at_level(logging.ERROR, logger="modeldeck.metrics"):
        for feeds in (good, bad, good, bad):
            variant.record_batch(feeds, outputs, 2, 0.001)
        exposition(metrics)
        for feeds in (numbers, bad, numbers):
            variant.record_batch(feeds, outputs, 2, 0.001)
        samples, _ = exposition(metrics)
    labels = {"endpoint": "e", "version": "1", "variant": "v", "component": "server"}
    feature = {**labels, "feature": "s"}
    assert samples[key("modeldeck_feature_value_count", feature)] == 8
    assert samples[key("modeldeck_feature_value_bucket", {**feature, "le": "1.0"})] == 4
    assert samples[key("modeldeck_prediction_value_count", labels)] == 7
    assert samples[key("modeldeck_inference_duration_seconds_count", labels)] == 7
    assert "could not count 2 of 4 batches" in caplog.text
    assert "could not count 1 of 3 batches" in caplog.text
