"""Prometheus text from the runtime → counter deltas → per-version rollup contributions.

Pure functions, no database: the scraper feeds them the stored previous values and stores what
they return. Counter resets are handled per series group (one counter, or all buckets and the
count of one histogram): when the process restarted (its start time changed) or any member went
down, the whole group restarted from zero, so its new values are the deltas. Nothing is lost and
nothing is counted twice, as long as every scrape's result is stored atomically.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from monitoring import histograms

PREFIX = "modeldeck_"
# A restart moves process_start_time_seconds by far more than its 10 ms resolution.
RESTART_TOLERANCE_SECONDS = 0.5


class ExpositionError(ValueError):
    """The text is not a Prometheus exposition we can read."""


@dataclass(frozen=True)
class Sample:
    """One counter-like sample of the exposition."""

    name: str
    labels: dict[str, str]
    value: float
    # Samples that reset together: the family and labels without `le`.
    group: str
    # Sums of histograms may go down legitimately (negative observations).
    monotonic: bool


@dataclass(frozen=True)
class Exposition:
    """The counters and histogram series of one scrape, by series key."""

    samples: dict[str, Sample]
    process_start: float | None = None

    @property
    def values(self) -> dict[str, float]:
        """What the scrape state stores for the next delta."""
        return {key: sample.value for key, sample in self.samples.items()}


def series_key(name: str, labels: dict[str, str]) -> str:
    """A stable text key for one series."""
    inner = ",".join(f"{key}={labels[key]!r}" for key in sorted(labels))
    return f"{name}{{{inner}}}"


def parse(text: str) -> Exposition:
    """Read the modeldeck counters and histograms (and the process start time) of a scrape."""
    samples: dict[str, Sample] = {}
    process_start = None
    try:
        families = list(text_string_to_metric_families(text))
    except (ValueError, TypeError, IndexError) as error:
        raise ExpositionError(f"unreadable metrics: {error}") from None
    for family in families:
        if family.name == "process_start_time_seconds" and family.samples:
            process_start = float(family.samples[0].value)
            continue
        if not family.name.startswith(PREFIX) or family.type not in ("counter", "histogram"):
            continue
        for sample in family.samples:
            suffix = sample.name[len(family.name) :]
            if suffix not in ("_total", "_bucket", "_count", "_sum"):
                continue  # _created and friends carry no counts
            if not math.isfinite(sample.value) and suffix != "_sum":
                continue
            labels = dict(sample.labels)
            group_labels = {k: v for k, v in labels.items() if k != "le"}
            key = series_key(sample.name, labels)
            samples[key] = Sample(
                name=sample.name,
                labels=labels,
                value=float(sample.value),
                group=series_key(family.name, group_labels),
                monotonic=suffix != "_sum",
            )
    return Exposition(samples=samples, process_start=process_start)


def restarted(previous_start: float | None, current_start: float | None) -> bool:
    """Whether the target process is a different one than at the previous scrape."""
    if previous_start is None or current_start is None:
        return False
    return abs(previous_start - current_start) > RESTART_TOLERANCE_SECONDS


def deltas(
    previous: dict[str, float], current: Exposition, *, process_restarted: bool = False
) -> dict[str, float]:
    """How much every series grew since the previous scrape, reset-aware per group.

    A series never seen before counts from zero (a new process or a new label set).
    """
    members: dict[str, list[str]] = defaultdict(list)
    for key, sample in current.samples.items():
        members[sample.group].append(key)
    result: dict[str, float] = {}
    for keys in members.values():
        reset = process_restarted or any(
            current.samples[key].monotonic
            and key in previous
            and current.samples[key].value < previous[key]
            for key in keys
        )
        for key in keys:
            value = current.samples[key].value
            result[key] = value if reset or key not in previous else value - previous[key]
    return result


@dataclass
class Contribution:
    """What one scrape adds to the rollup of one version (field names as in RollupFields)."""

    variant: str = ""
    requests: int = 0
    successes: int = 0
    client_errors: int = 0
    server_errors: int = 0
    rows: int = 0
    latency_sum: float = 0.0
    latency: dict = field(default_factory=dict)
    inference_sum: float = 0.0
    inference: dict = field(default_factory=dict)
    features: dict = field(default_factory=dict)
    prediction: dict = field(default_factory=dict)
    shadow_agreed: int = 0
    shadow_disagreed: int = 0

    COUNTERS = (
        "requests",
        "successes",
        "client_errors",
        "server_errors",
        "rows",
        "shadow_agreed",
        "shadow_disagreed",
    )
    FLOATS = ("latency_sum", "inference_sum")
    HISTOGRAMS = ("latency", "inference", "prediction")

    @property
    def is_empty(self) -> bool:
        """Nothing happened: no row needs writing."""
        return (
            not any(getattr(self, name) for name in self.COUNTERS)
            and not any(histograms.total(getattr(self, name)) for name in self.HISTOGRAMS)
            and not any(histograms.total(value) for value in self.features.values())
        )


OUTCOME_FIELDS = {
    "success": "successes",
    "client_error": "client_errors",
    "server_error": "server_errors",
}
HISTOGRAM_FIELDS = {
    "modeldeck_request_duration_seconds": "latency",
    "modeldeck_inference_duration_seconds": "inference",
    "modeldeck_prediction_value": "prediction",
}


def contributions(
    exposition: Exposition,
    growth: dict[str, float],
    resolve_version: Callable[[dict[str, str]], int | None],
) -> dict[int, Contribution]:
    """Turn series deltas into one contribution per model version id.

    `resolve_version(labels)` names the version a series belongs to (None: skip it).
    """
    result: dict[int, Contribution] = {}
    # (version id, histogram field, feature name or "") -> [(le, cumulative delta)]
    buckets: dict[tuple[int, str, str], list[tuple[float, float]]] = defaultdict(list)
    for key, delta in growth.items():
        sample = exposition.samples[key]
        labels = sample.labels
        version_id = resolve_version(labels)
        if version_id is None:
            continue
        contribution = result.setdefault(version_id, Contribution())
        if labels.get("variant"):
            contribution.variant = labels["variant"][:16]
        name = sample.name
        if name == "modeldeck_requests_total":
            count = round(delta)
            contribution.requests += count
            outcome = OUTCOME_FIELDS.get(labels.get("outcome", ""))
            if outcome:
                setattr(contribution, outcome, getattr(contribution, outcome) + count)
        elif name == "modeldeck_batch_rows_sum":
            contribution.rows += round(delta)
        elif name == "modeldeck_request_duration_seconds_sum":
            contribution.latency_sum += delta
        elif name == "modeldeck_inference_duration_seconds_sum":
            contribution.inference_sum += delta
        elif name == "modeldeck_shadow_comparisons_total":
            if labels.get("agreed") == "true":
                contribution.shadow_agreed += round(delta)
            else:
                contribution.shadow_disagreed += round(delta)
        elif name == "modeldeck_feature_category_total":
            feature = contribution.features.setdefault(labels.get("feature", ""), {})
            categories = feature.setdefault("categories", {})
            category = labels.get("category", "")
            categories[category] = categories.get(category, 0) + round(delta)
        elif name == "modeldeck_predictions_total":
            categories = contribution.prediction.setdefault("categories", {})
            label = labels.get("class", "")
            categories[label] = categories.get(label, 0) + round(delta)
        elif name.endswith("_bucket"):
            family = name[: -len("_bucket")]
            bound = float(labels.get("le", "+Inf"))
            if family == "modeldeck_feature_value":
                buckets[(version_id, "features", labels.get("feature", ""))].append((bound, delta))
            elif family in HISTOGRAM_FIELDS:
                buckets[(version_id, HISTOGRAM_FIELDS[family], "")].append((bound, delta))
    for (version_id, field_name, feature), pairs in buckets.items():
        histogram = histograms.from_cumulative(pairs)
        contribution = result[version_id]
        if field_name == "features":
            contribution.features[feature] = histogram
        else:
            setattr(contribution, field_name, histogram)
    return {version_id: c for version_id, c in result.items() if not c.is_empty}
