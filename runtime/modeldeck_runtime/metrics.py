"""Prometheus metrics kept in plain counters and numpy arrays, exposed by one custom Collector."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

BASE_LABELS = ("endpoint", "version", "variant", "component")

DURATION_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 10000)
VALUE_BUCKETS = (
    -1000.0, -100.0, -10.0, -5.0, -2.0, -1.0, -0.5, -0.1, 0.0, 0.1, 0.5, 1.0, 2.0, 5.0,
    10.0, 100.0, 1000.0,
)  # fmt: skip
DIFFERENCE_BUCKETS = (1e-9, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0)

# Beyond this many distinct labels, classes and categories are counted as "__other__", so a
# regressor mistaken for a classifier cannot explode the number of series.
MAX_CLASSES = 100
OTHER = "__other__"

# Below this many comparisons per batch, one broadcast comparison beats a searchsorted per feature.
BROADCAST_LIMIT = 1 << 16
# Up to this many values, plain Python beats numpy: each numpy call costs a few microseconds.
SMALL_BATCH = 128

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Histogram:
    """Fixed buckets with Prometheus `le` semantics, observed one value or one batch at a time."""

    __slots__ = ("bound_array", "bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = sorted({float(bound) for bound in bounds})
        self.bound_array = np.array(self.bounds, dtype=np.float64)
        self.counts = np.zeros(len(self.bounds) + 1, dtype=np.int64)
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Count one value."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def observe_many(self, values: np.ndarray) -> None:
        """Count every finite value of an array."""
        if values.size <= SMALL_BATCH:
            for value in values.ravel().tolist():
                if math.isfinite(value):
                    self.observe(value)
            return
        values = np.asarray(values, dtype=np.float64).ravel()
        values = values[np.isfinite(values)]
        if not values.size:
            return
        indexes = np.searchsorted(self.bound_array, values, side="left")
        self.counts += np.bincount(indexes, minlength=self.counts.size)
        self.total += float(values.sum())

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative (le, count) pairs ending with +Inf."""
        return cumulative_buckets(self.bounds, self.counts)


def cumulative_buckets(bounds: Sequence[float], counts: np.ndarray) -> list[tuple[str, float]]:
    """Turn per-bucket counts into Prometheus cumulative buckets."""
    running = np.cumsum(counts[: len(bounds) + 1])
    labels = [floatToGoString(bound) for bound in bounds] + ["+Inf"]
    return [(label, float(count)) for label, count in zip(labels, running, strict=True)]


class FeatureGroup:
    """Numeric features reading columns of one input, histogrammed together per batch."""

    def __init__(
        self,
        input_name: str,
        names: list[str],
        columns: list[int] | None,
        bounds: list[list[float]],
    ) -> None:
        self.input_name = input_name
        self.names = names
        self.columns = np.array(columns, dtype=np.intp) if columns is not None else None
        self.bound_lists = [sorted({float(bound) for bound in feature}) for feature in bounds]
        width = max(len(feature) for feature in self.bound_lists)
        # Padding with +inf keeps every feature's extra buckets empty.
        self.bounds = np.full((len(names), width), np.inf)
        for row, feature in enumerate(self.bound_lists):
            self.bounds[row, : len(feature)] = feature
        self.counts = np.zeros((len(names), width + 1), dtype=np.int64)
        self.sums = np.zeros(len(names))
        self.offsets = np.arange(len(names), dtype=np.intp) * (width + 1)
        # Default features all share one set of bounds: one searchsorted over the whole batch
        # replaces a comparison of every value with every bound.
        first = self.bound_lists[0]
        shared = all(feature == first for feature in self.bound_lists)
        self.shared_bounds = np.array(first, dtype=np.float64) if shared else None
        # Small batches are counted here in plain Python and merged into the arrays on scrape.
        self.column_list = columns
        self.max_column = max(columns) if columns else 0
        self.small_counts = [[0] * (width + 1) for _ in names]
        self.small_sums = [0.0] * len(names)

    def observe(self, array: np.ndarray) -> None:
        """Count the feature values of one batch of this input."""
        if self.columns is None:
            matrix = array.reshape(-1, 1)
        else:
            if array.ndim < 2 or not array.size:
                return
            matrix = array.reshape(array.shape[0], -1)
            if matrix.shape[1] <= self.max_column:
                # a profile naming a column this batch does not have: nothing to count
                return
            if matrix.shape[0] * len(self.names) <= SMALL_BATCH:
                self._observe_small(matrix.tolist())
                return
            matrix = matrix[:, self.columns]
        if matrix.size <= SMALL_BATCH:
            self._observe_small(matrix.tolist())
            return
        matrix = matrix.astype(np.float64, copy=False)
        finite = np.isfinite(matrix)
        if self.shared_bounds is not None:
            indexes = np.searchsorted(self.shared_bounds, matrix, side="left")
        elif matrix.size * self.bounds.shape[1] <= BROADCAST_LIMIT:
            indexes = (matrix[:, :, None] > self.bounds[None, :, :]).sum(axis=2)
        else:
            indexes = np.empty(matrix.shape, dtype=np.intp)
            for feature in range(matrix.shape[1]):
                indexes[:, feature] = np.searchsorted(
                    self.bounds[feature], matrix[:, feature], side="left"
                )
        cells = (indexes + self.offsets)[finite]
        self.counts += np.bincount(cells, minlength=self.counts.size).reshape(self.counts.shape)
        self.sums += np.where(finite, matrix, 0.0).sum(axis=0)

    def _observe_small(self, rows: list[list[float]]) -> None:
        columns = self.column_list or [0]
        bounds = self.bound_lists
        counts = self.small_counts
        sums = self.small_sums
        for row in rows:
            for feature, column in enumerate(columns):
                value = row[column]
                if math.isfinite(value):
                    counts[feature][bisect_left(bounds[feature], value)] += 1
                    sums[feature] += value

    def totals(self, feature: int) -> tuple[np.ndarray, float]:
        """Per-bucket counts and the sum of one feature, from both the batch and small paths."""
        counts = self.counts[feature] + np.array(self.small_counts[feature], dtype=np.int64)
        return counts, float(self.sums[feature]) + self.small_sums[feature]


class CategoryCounter:
    """Counts of one categorical feature or of predicted classes; unknown values beyond a cap go to
    __other__."""

    def __init__(
        self, name: str, input_name: str | None, column: int | None, known: list[str]
    ) -> None:
        self.name = name
        self.input_name = input_name
        self.column = column
        self.counts: dict[str, int] = dict.fromkeys(known, 0)
        self.fixed = bool(known)

    def observe_labels(self, labels: np.ndarray) -> None:
        """Count an array of labels."""
        if not labels.size:
            return
        if labels.size <= SMALL_BATCH:
            pairs: Any = Counter(labels.ravel().tolist()).items()
        else:
            values, counts = np.unique(labels.ravel(), return_counts=True)
            pairs = zip(values.tolist(), counts.tolist(), strict=True)
        for value, count in pairs:
            key = value if isinstance(value, str) else str(value)
            if key not in self.counts and (self.fixed or len(self.counts) >= MAX_CLASSES):
                key = OTHER
            self.counts[key] = self.counts.get(key, 0) + count

    def observe(self, array: np.ndarray) -> None:
        """Count the feature's column of one batch of its input."""
        if self.column is None:
            self.observe_labels(array)
        elif array.ndim >= 2:
            self.observe_labels(array.reshape(array.shape[0], -1)[:, self.column])


class PredictionTracker:
    """Predicted classes (classifiers) or predicted values (regressors) of one output."""

    def __init__(
        self,
        output: str,
        kind: str,
        bounds: Sequence[float] | None = None,
        classes: list[str] | None = None,
    ) -> None:
        self.output = output
        self.kind = kind
        self.classes = CategoryCounter("prediction", None, None, classes or [])
        self.values = Histogram(bounds or VALUE_BUCKETS)

    def observe(self, outputs: dict[str, Any]) -> None:
        """Count the predictions of one batch."""
        value = outputs.get(self.output)
        if not isinstance(value, np.ndarray) or not value.size:
            return
        if self.kind == "categorical":
            self.classes.observe_labels(prediction_labels(value))
        else:
            self.values.observe_many(value)


def prediction_labels(value: np.ndarray) -> np.ndarray:
    """Class labels of an output: the labels themselves, or the argmax of per-class scores."""
    if value.dtype.kind == "f" and value.ndim >= 2 and value.shape[-1] > 1:
        return value.argmax(axis=-1)
    return value.ravel()


class VariantMetrics:
    """Every series of one (version, variant) label set."""

    def __init__(self, endpoint: str, version: str, variant: str, component: str) -> None:
        self.labels = [endpoint, version, variant, component]
        self.successes = 0
        self.client_errors = 0
        self.server_errors = 0
        self.in_flight = 0
        self.request_duration = Histogram(DURATION_BUCKETS)
        self.inference_duration = Histogram(DURATION_BUCKETS)
        self.batch_rows = Histogram(ROW_BUCKETS)
        self.feature_groups: list[FeatureGroup] = []
        self.categories: list[CategoryCounter] = []
        self.prediction: PredictionTracker | None = None

    def record_request(self, status: int, seconds: float) -> None:
        """Count one finished inference request by its HTTP status."""
        if status < 400:
            self.successes += 1
        elif status < 500:
            self.client_errors += 1
        else:
            self.server_errors += 1
        self.request_duration.observe(seconds)

    def record_batch(
        self,
        feeds: dict[str, np.ndarray],
        outputs: dict[str, Any],
        rows: int | list[int],
        seconds: float,
    ) -> None:
        """Count one successful onnxruntime call: its duration, the rows of each request it
        answered (several when requests were batched), features and predictions."""
        self.inference_duration.observe(seconds)
        if isinstance(rows, int):
            self.batch_rows.observe(rows)
        else:
            for count in rows:
                self.batch_rows.observe(count)
        for group in self.feature_groups:
            array = feeds.get(group.input_name)
            if array is not None:
                group.observe(array)
        for counter in self.categories:
            array = feeds.get(counter.input_name or "")
            if array is not None:
                counter.observe(array)
        if self.prediction is not None:
            self.prediction.observe(outputs)


class ShadowMetrics:
    """Agreement between a shadow and the version that answered the caller."""

    def __init__(self, labels: list[str], primary_version: str) -> None:
        self.labels = labels
        self.primary_version = primary_version
        self.agreed = 0
        self.disagreed = 0
        self.difference = Histogram(DIFFERENCE_BUCKETS)


class ServingMetrics:
    """All metrics of one process (a version server or a gateway) and their exposition."""

    def __init__(self, *, endpoint: str, component: str) -> None:
        self.endpoint = endpoint
        self.component = component
        self.variants: dict[tuple[str, str], VariantMetrics] = {}
        self.shadows: dict[tuple[str, str], ShadowMetrics] = {}
        self.shadow_dropped = 0
        # Set by a version server whose start-up smoke inference failed but which serves anyway.
        self.smoke_warning: str | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        ProcessCollector(registry=self.registry)

    def variant(self, version: str, variant: str) -> VariantMetrics:
        """The series of one (version, variant), created on first use."""
        key = (version, variant)
        metrics = self.variants.get(key)
        if metrics is None:
            metrics = VariantMetrics(self.endpoint, version, variant, self.component)
            self.variants[key] = metrics
        return metrics

    def shadow(self, version: str, primary_version: str) -> ShadowMetrics:
        """The comparison series of one shadow against one primary version."""
        key = (version, primary_version)
        metrics = self.shadows.get(key)
        if metrics is None:
            labels = [self.endpoint, version, "shadow", self.component]
            metrics = ShadowMetrics(labels, primary_version)
            self.shadows[key] = metrics
        return metrics

    def render(self) -> bytes:
        """The Prometheus text exposition of everything."""
        return generate_latest(self.registry)


class _Collector:
    """Builds metric families from the plain counters on each scrape."""

    def __init__(self, metrics: ServingMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        """Yield every family."""
        variants = list(self.metrics.variants.values())
        requests = CounterMetricFamily(
            "modeldeck_requests",
            "Inference requests by outcome.",
            labels=[*BASE_LABELS, "outcome"],
        )
        in_flight = GaugeMetricFamily(
            "modeldeck_in_flight_requests", "Inference requests being served.", labels=BASE_LABELS
        )
        request_duration = _histogram_family(
            "modeldeck_request_duration_seconds", "Time from request to response."
        )
        inference_duration = _histogram_family(
            "modeldeck_inference_duration_seconds", "Time spent in onnxruntime."
        )
        batch_rows = _histogram_family("modeldeck_batch_rows", "Rows per inference request.")
        feature_value = _histogram_family(
            "modeldeck_feature_value", "Input feature values.", ["feature"]
        )
        feature_category = CounterMetricFamily(
            "modeldeck_feature_category",
            "Categorical input feature values.",
            labels=[*BASE_LABELS, "feature", "category"],
        )
        predictions = CounterMetricFamily(
            "modeldeck_predictions", "Predicted classes.", labels=[*BASE_LABELS, "class"]
        )
        prediction_value = _histogram_family(
            "modeldeck_prediction_value", "Predicted values of regressors."
        )
        for variant in variants:
            labels = variant.labels
            requests.add_metric([*labels, "success"], variant.successes)
            requests.add_metric([*labels, "client_error"], variant.client_errors)
            requests.add_metric([*labels, "server_error"], variant.server_errors)
            in_flight.add_metric(labels, variant.in_flight)
            _add_histogram(request_duration, labels, variant.request_duration)
            if self.metrics.component == "server":
                _add_histogram(inference_duration, labels, variant.inference_duration)
                _add_histogram(batch_rows, labels, variant.batch_rows)
            for group in variant.feature_groups:
                for row, name in enumerate(group.names):
                    counts, total = group.totals(row)
                    _add_buckets(
                        feature_value,
                        [*labels, name],
                        cumulative_buckets(group.bound_lists[row], counts),
                        total,
                    )
            for counter in variant.categories:
                for category, count in counter.counts.items():
                    feature_category.add_metric([*labels, counter.name, category], count)
            prediction = variant.prediction
            if prediction is not None and prediction.kind == "categorical":
                for label, count in prediction.classes.counts.items():
                    predictions.add_metric([*labels, label], count)
            elif prediction is not None:
                _add_histogram(prediction_value, labels, prediction.values)
        yield from (requests, in_flight, request_duration)
        if self.metrics.component == "server":
            yield from (inference_duration, batch_rows, feature_value, feature_category)
            yield from (predictions, prediction_value)
            smoke = GaugeMetricFamily(
                "modeldeck_smoke_failed",
                "1 when the start-up smoke inference failed and the server serves anyway.",
                labels=BASE_LABELS,
            )
            for variant in variants:
                smoke.add_metric(variant.labels, 0 if self.metrics.smoke_warning is None else 1)
            yield smoke
        else:
            yield from self._shadow_families()

    def _shadow_families(self) -> Iterator[Metric]:
        comparisons = CounterMetricFamily(
            "modeldeck_shadow_comparisons",
            "Shadow answers compared with the answer the caller got.",
            labels=[*BASE_LABELS, "primary_version", "agreed"],
        )
        difference = _histogram_family(
            "modeldeck_shadow_abs_difference",
            "Largest absolute difference between a shadow's and the caller's numeric outputs.",
            ["primary_version"],
        )
        dropped = CounterMetricFamily(
            "modeldeck_shadow_dropped",
            "Mirrored requests skipped because too many shadow requests were pending.",
            labels=["endpoint", "component"],
        )
        for shadow in self.metrics.shadows.values():
            comparisons.add_metric([*shadow.labels, shadow.primary_version, "true"], shadow.agreed)
            comparisons.add_metric(
                [*shadow.labels, shadow.primary_version, "false"], shadow.disagreed
            )
            _add_histogram(difference, [*shadow.labels, shadow.primary_version], shadow.difference)
        dropped.add_metric(
            [self.metrics.endpoint, self.metrics.component], self.metrics.shadow_dropped
        )
        yield from (comparisons, difference, dropped)


def _histogram_family(
    name: str, documentation: str, extra_labels: list[str] | None = None
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(
        name, documentation, labels=[*BASE_LABELS, *(extra_labels or [])]
    )
    family.extra_labels = extra_labels or []  # type: ignore[attr-defined]
    return family


def _add_histogram(family: HistogramMetricFamily, labels: list[str], histogram: Histogram) -> None:
    _add_buckets(family, labels, histogram.buckets(), histogram.total)


def _add_buckets(
    family: HistogramMetricFamily,
    labels: list[str],
    buckets: list[tuple[str, float]],
    total: float,
) -> None:
    family.add_metric(labels, buckets, total)
    if float(buckets[0][0]) < 0:
        # prometheus_client leaves out _count and _sum when buckets go negative (a sum that can
        # fall is no counter); the count is still exact and scrapers need it.
        names = [*BASE_LABELS, *family.extra_labels]
        family.samples.append(
            Sample(f"{family.name}_count", dict(zip(names, labels, strict=True)), buckets[-1][1])
        )


# Samples that describe one process rather than count events: the merged value is the smallest
# (start time) or the largest (flags), not the sum.
_MERGE_MIN = frozenset({"process_start_time_seconds"})
_MERGE_MAX = frozenset({"modeldeck_smoke_failed", "process_max_fds"})


def merge_expositions(texts: Sequence[bytes]) -> bytes:
    """One exposition for a version served by several worker processes.

    Each worker counts what it served; a scrape, whichever worker it reaches, must see the
    whole version, so counters, histogram buckets and sums, in-flight gauges and memory add up
    across workers (a start time takes the earliest, a flag the largest).
    """
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text.decode()):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, family.documentation, family.type
                )
                values[family.name] = {}
            samples = values[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                previous = samples.get(key)
                if previous is None:
                    samples[key] = sample.value
                elif sample.name in _MERGE_MIN:
                    samples[key] = min(previous, sample.value)
                elif sample.name in _MERGE_MAX:
                    samples[key] = max(previous, sample.value)
                else:
                    samples[key] = previous + sample.value
    registry = CollectorRegistry(auto_describe=False)

    class _Merged:
        def collect(self) -> Iterator[Metric]:
            for name, family in families.items():
                family.samples = [
                    Sample(sample_name, dict(labels), value)
                    for (sample_name, labels), value in values[name].items()
                ]
                yield family

    registry.register(_Merged())
    return generate_latest(registry)
