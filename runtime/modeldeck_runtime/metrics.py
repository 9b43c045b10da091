"""Prometheus metrics kept in plain counters and numpy arrays, exposed by one custom Collector."""

from __future__ import annotations

import logging
import math
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
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
# With up to COMPARE_BOUNDS shared bounds and at least COMPARE_VALUES values per bound, one
# comparison of the batch per bound beats searchsorted's binary search per value (~12 ns a
# value on random data: its branches are unpredictable).
COMPARE_BOUNDS = 32
COMPARE_VALUES = 256
# Labels that are integers in [0, BINCOUNT_LIMIT) (classes from an argmax, say) are counted
# with one bincount instead of a sort.
BINCOUNT_LIMIT = 1 << 12

# record_batch keeps references to what a batch must count and counts them later, many batches
# in one vectorised pass (see VariantMetrics.record_batch). It counts them once the references
# hold more than PENDING_BYTES (512 KiB: 64 Ki float64 or 128 Ki float32 values) or
# PENDING_BATCHES batches; a batch larger than that on its own is counted at once, on its own.
# Passes over more are slower per value (1 MiB: 2.5 times, measured with 64-row batches of 100
# float32 inputs): their temporary arrays no longer fit the CPU caches.
PENDING_BYTES = 1 << 19
PENDING_BATCHES = 512

CONTENT_TYPE = CONTENT_TYPE_LATEST

logger = logging.getLogger("modeldeck.metrics")


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
            # all checked before any is counted: values that are not numbers change nothing
            for value in [value for value in values.ravel().tolist() if math.isfinite(value)]:
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
        self.compare_bounds = first if shared and len(first) <= COMPARE_BOUNDS else None
        self.max_column = max(columns) if columns else 0
        # The first k columns (the default features) are a view, not a copy, of the batch.
        self.column_index: slice | np.ndarray | None = self.columns
        if columns is not None and columns == list(range(len(columns))):
            self.column_index = slice(0, len(columns))
        # The VariantMetrics whose pending batches this group has yet to count (see totals).
        self.owner: VariantMetrics | None = None

    def observe(self, array: np.ndarray) -> None:
        """Count the feature values of one batch of this input (or of batches joined); a batch
        that cannot be counted raises and changes nothing."""
        if self.columns is None:
            matrix = array.reshape(-1, 1)
        else:
            if array.ndim < 2 or not array.size:
                return
            matrix = array.reshape(array.shape[0], -1)
            if matrix.shape[1] <= self.max_column:
                # a profile naming a column this batch does not have: nothing to count
                return
            matrix = matrix[:, self.column_index]
        matrix = matrix.astype(np.float64, copy=False)
        finite = np.isfinite(matrix)
        if finite.all():
            finite = None  # the usual case: no mask to apply
        compare = self.compare_bounds
        if compare is not None and matrix.size >= COMPARE_VALUES * len(compare):
            indexes = count_below(matrix, compare)
        elif self.shared_bounds is not None:
            indexes = np.searchsorted(self.shared_bounds, matrix, side="left")
        elif matrix.size * self.bounds.shape[1] <= BROADCAST_LIMIT:
            indexes = (matrix[:, :, None] > self.bounds[None, :, :]).sum(axis=2)
        else:
            indexes = np.empty(matrix.shape, dtype=np.intp)
            for feature in range(matrix.shape[1]):
                indexes[:, feature] = np.searchsorted(
                    self.bounds[feature], matrix[:, feature], side="left"
                )
        cells = indexes + self.offsets
        if finite is None:
            sums = matrix.sum(axis=0)
        else:
            cells = cells[finite]
            sums = np.where(finite, matrix, 0.0).sum(axis=0)
        counts = np.bincount(cells.ravel(), minlength=self.counts.size)
        counts = counts.reshape(self.counts.shape)
        self.counts += counts
        self.sums += sums

    def totals(self, feature: int) -> tuple[np.ndarray, float]:
        """Per-bucket counts and the sum of one feature, pending batches included."""
        if self.owner is not None:
            self.owner.flush()
        return self.counts[feature].copy(), float(self.sums[feature])


def count_below(matrix: np.ndarray, bounds: list[float]) -> np.ndarray:
    """How many of (at most 255) sorted bounds lie below each float64 value: searchsorted's
    side="left" index for values that are not NaN, from one comparison per bound."""
    indexes = np.zeros(matrix.shape, dtype=np.uint8)
    above = np.empty(matrix.shape, dtype=bool)
    for bound in bounds:
        np.greater(matrix, bound, out=above)
        indexes += above
    return indexes


class CategoryCounter:
    """Counts of one categorical feature or of predicted classes; unknown values beyond a cap go to
    __other__.

    Labels get their own series in order of first appearance across everything counted, whether
    batches are counted one at a time or many together: while no fixed list of categories was
    given and fewer than MAX_CLASSES labels are known, a label seen for the first time gets its
    own series; after that, every new label counts as __other__. Read `counts` after the owning
    VariantMetrics.flush() (the collector does).
    """

    def __init__(
        self, name: str, input_name: str | None, column: int | None, known: list[str]
    ) -> None:
        self.name = name
        self.input_name = input_name
        self.column = column
        self.counts: dict[str, int] = dict.fromkeys(known, 0)
        self.fixed = bool(known)

    def observe_labels(self, labels: np.ndarray) -> None:
        """Count an array of labels, in order of first appearance."""
        labels = labels.ravel()
        if not labels.size:
            return
        if labels.size <= SMALL_BATCH or labels.dtype.hasobject:
            # a Counter keeps labels in order of first appearance, and compares any objects
            pairs: Any = Counter(labels.tolist()).items()
        else:
            pairs = self._distinct(labels)
        counts = self.counts
        for value, count in pairs:
            key = value if isinstance(value, str) else str(value)
            if key not in counts and (self.fixed or len(counts) >= MAX_CLASSES):
                key = OTHER
            counts[key] = counts.get(key, 0) + count

    def _distinct(self, labels: np.ndarray) -> Any:
        """(label, count) pairs of a large array of numbers: in order of first appearance when
        that order can matter (a new label that may get its own series), else in any order."""
        if labels.dtype.kind in "iu":
            low, high = int(labels.min()), int(labels.max())
            if low >= 0 and high < BINCOUNT_LIMIT:
                tallies = np.bincount(labels.astype(np.intp, copy=False))
                values = np.flatnonzero(tallies)
                pairs = list(zip(values.tolist(), tallies[values].tolist(), strict=True))
            else:
                values, tallies = np.unique(labels, return_counts=True)
                pairs = list(zip(values.tolist(), tallies.tolist(), strict=True))
            counts = self.counts
            if (
                self.fixed
                or len(counts) >= MAX_CLASSES
                or all(str(value) in counts for value, _ in pairs)
            ):
                return pairs
        # A stable sort: among equal values (0.0 and -0.0, NaNs) the first one seen is kept.
        values, first, tallies = np.unique(labels, return_index=True, return_counts=True)
        order = np.argsort(first, kind="stable")
        return zip(values[order].tolist(), tallies[order].tolist(), strict=True)

    def observe(self, array: np.ndarray) -> None:
        """Count the feature's column of one batch of its input (or of batches joined)."""
        if self.column is None:
            self.observe_labels(array)
        elif array.ndim >= 2 and array.size:
            matrix = array.reshape(array.shape[0], -1)
            # a batch narrower than the profile's column has nothing to count
            if matrix.shape[1] > self.column:
                self.observe_labels(matrix[:, self.column])


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

    def observe_value(self, value: np.ndarray) -> None:
        """Count one array of this output (of one batch or of batches joined)."""
        if self.kind == "categorical":
            self.classes.observe_labels(prediction_labels(value))
        else:
            self.values.observe_many(value)


def prediction_labels(value: np.ndarray) -> np.ndarray:
    """Class labels of an output: the labels themselves, or the argmax of per-class scores."""
    if value.dtype.kind == "f" and value.ndim >= 2 and value.shape[-1] > 1:
        return value.argmax(axis=-1)
    return value.ravel()


def join(arrays: list[np.ndarray]) -> np.ndarray | None:
    """Batches joined along their first axis (counting the join counts each of them), or None
    when they differ in dtype or in shape past the first axis."""
    if len(arrays) == 1:
        return arrays[0]
    try:
        # casting="no": joining int64 with float32 labels would turn 3 into "3.0"
        return np.concatenate(arrays, casting="no")
    except (TypeError, ValueError):
        return None


def _held_bytes(array: np.ndarray) -> int:
    """The memory a reference to an array keeps alive, or an upper estimate for strings."""
    if array.dtype.kind != "O":
        # the servers' arrays own their data or view a buffer of their own size
        return array.nbytes
    try:
        # a str takes at most 80 bytes plus 4 a character
        return array.size * 80 + 4 * sum(map(len, array.ravel().tolist()))
    except TypeError:
        return PENDING_BYTES + 1  # objects of unknown size: count them at once


def _runs(arrays: list[np.ndarray]) -> list[list[np.ndarray]]:
    """Pending arrays of one input or output, in order, as lists to count together: a last
    batch too large to be held (see PENDING_BYTES) is counted on its own, not copied."""
    if len(arrays) > 1 and _held_bytes(arrays[-1]) > PENDING_BYTES:
        return [arrays[:-1], arrays[-1:]]
    return [arrays]


def observe_batches(observe: Callable[[np.ndarray], None], arrays: list[np.ndarray]) -> None:
    """Count batches (arrays of one input or output, in order) with one tracker's observe: in
    one pass over them joined when they join, else one by one. observe changes nothing when it
    raises, so a batch that cannot be counted (a numeric profile over strings, say) loses only
    its own counts, and is logged rather than raised to the reader that flushed."""
    for run in _runs(arrays):
        joined = join(run)
        if joined is not None and len(run) > 1:
            try:
                observe(joined)
            except Exception:
                logger.debug("counting %d batches one by one to find those that fail", len(run))
            else:
                continue
        lost: list[Exception] = []
        for array in run:
            try:
                observe(array)
            except Exception as error:
                lost.append(error)
        if lost:
            logger.error("could not count %d of %d batches", len(lost), len(run), exc_info=lost[0])


class VariantMetrics:
    """Every series of one (version, variant) label set.

    record_batch runs on the serving hot path after every onnxruntime call, so it only keeps
    references to what a batch must count; flush() counts every pending batch in one vectorised
    pass when enough are pending, and always before anything reads the counts (the collector
    calls it on each scrape, FeatureGroup.totals calls it). The counts are those of counting
    each batch at once; float sums may differ in their last bits (another order of addition).
    Everything here runs on the event loop thread (the servers record and render there): there
    is no lock, and no other thread may call record_batch or flush.
    """

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
        # The trackers record_batch keeps arrays for, as they were when it last looked (see
        # _track), and per input: its name, its pending arrays, the groups and counters reading
        # it. Pending references hold at most PENDING_BYTES of arrays plus the batch that
        # crosses it, and at most PENDING_BATCHES batches (array headers, durations, rows).
        self._layout: tuple[int, int, PredictionTracker | None] = (0, 0, None)
        self._inputs: list[
            tuple[str, list[np.ndarray], tuple[FeatureGroup, ...], tuple[CategoryCounter, ...]]
        ] = []
        self._prediction: PredictionTracker | None = None
        self._pending_predictions: list[np.ndarray] = []
        self._pending_seconds: list[float] = []
        self._pending_rows: list[int] = []
        self._pending_bytes = 0

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
        answered (several when requests were batched), features and predictions.

        Counted by a later flush(): the arrays are kept by reference, so nobody may write into
        them afterwards (the servers never do)."""
        if self._layout != (len(self.feature_groups), len(self.categories), self.prediction):
            self._track()
        self._pending_seconds.append(seconds)
        if isinstance(rows, int):
            self._pending_rows.append(rows)
        else:
            self._pending_rows.extend(rows)
        held = self._pending_bytes
        for name, pending, _groups, _counters in self._inputs:
            array = feeds.get(name)
            if array is not None:
                pending.append(array)
                held += array.nbytes if array.dtype.kind != "O" else _held_bytes(array)
        prediction = self._prediction
        if prediction is not None:
            value = outputs.get(prediction.output)
            if isinstance(value, np.ndarray) and value.size:
                self._pending_predictions.append(value)
                held += value.nbytes if value.dtype.kind != "O" else _held_bytes(value)
        self._pending_bytes = held
        if held > PENDING_BYTES or len(self._pending_seconds) >= PENDING_BATCHES:
            self.flush()

    def _track(self) -> None:
        """Follow trackers attached since the last batch; what is pending was recorded before
        them, so the previous trackers count it first (as they would have at once)."""
        self.flush()
        inputs: dict[str, tuple[list[FeatureGroup], list[CategoryCounter]]] = {}
        for group in self.feature_groups:
            inputs.setdefault(group.input_name, ([], []))[0].append(group)
            group.owner = self
        for counter in self.categories:
            inputs.setdefault(counter.input_name or "", ([], []))[1].append(counter)
        self._inputs = [
            (name, [], tuple(groups), tuple(counters))
            for name, (groups, counters) in inputs.items()
        ]
        self._prediction = self.prediction
        self._layout = (len(self.feature_groups), len(self.categories), self.prediction)

    def flush(self) -> None:
        """Count every pending batch now; readers of the counts call this first."""
        if not self._pending_seconds:
            return
        seconds, self._pending_seconds = self._pending_seconds, []
        rows, self._pending_rows = self._pending_rows, []
        predictions, self._pending_predictions = self._pending_predictions, []
        self._pending_bytes = 0
        # Durations and row counts are finite: observe_many counts them as observe would.
        self.inference_duration.observe_many(np.array(seconds, dtype=np.float64))
        self.batch_rows.observe_many(np.array(rows, dtype=np.float64))
        for _name, pending, groups, counters in self._inputs:
            if not pending:
                continue
            arrays = pending.copy()
            pending.clear()
            for group in groups:
                observe_batches(group.observe, arrays)
            for counter in counters:
                observe_batches(counter.observe, arrays)
        if predictions and self._prediction is not None:
            observe_batches(self._prediction.observe_value, predictions)


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
        for variant in variants:
            variant.flush()
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
