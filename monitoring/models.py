"""Metric rollups, drift reports, alert rules and alerts, prediction log, experiments and
guardrails (webhooks live in the events app)."""

from django.conf import settings
from django.db import models
from django.utils import timezone

from common.models import TimeStampedModel
from deployments.models import Endpoint
from registry.models import ModelVersion


class Component(models.TextChoices):
    """Which runtime process a series came from: the gateway sees what callers see, version
    servers add inference time, features and predictions."""

    GATEWAY = "gateway", "Gateway"
    SERVER = "server", "Version server"


class RollupFields(models.Model):
    """The counters and histograms of one endpoint × version × component over one period.

    Histograms are `{"bounds": [le, ...], "counts": [per bucket, ..., +Inf bucket]}` (per-bucket,
    not cumulative, so that rows add up); `features` maps a feature name to such a histogram or
    to `{"categories": {value: count}}`, and `prediction` is one of the two.
    """

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="+")
    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="+")
    component = models.CharField(max_length=8, choices=Component.choices)
    # The role the version last had in the gateway's route table (primary, candidate, shadow).
    variant = models.CharField(max_length=16, blank=True)
    requests = models.PositiveBigIntegerField(default=0)
    successes = models.PositiveBigIntegerField(default=0)
    client_errors = models.PositiveBigIntegerField(default=0)
    server_errors = models.PositiveBigIntegerField(default=0)
    rows = models.PositiveBigIntegerField(default=0)
    latency_sum = models.FloatField(default=0.0)
    latency = models.JSONField(default=dict, blank=True)
    inference_sum = models.FloatField(default=0.0)
    inference = models.JSONField(default=dict, blank=True)
    features = models.JSONField(default=dict, blank=True)
    prediction = models.JSONField(default=dict, blank=True)
    shadow_agreed = models.PositiveBigIntegerField(default=0)
    shadow_disagreed = models.PositiveBigIntegerField(default=0)

    class Meta:
        abstract = True


class MetricPoint(RollupFields):
    """Per-minute rollup of one endpoint × version × component, kept for a week."""

    minute = models.DateTimeField()

    class Meta:
        ordering = ["endpoint_id", "minute"]
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "version", "component", "minute"], name="metricpoint_unique"
            )
        ]
        indexes = [
            # metric_series: one endpoint, one component, a time range.
            models.Index(fields=["endpoint", "component", "minute"], name="metricpoint_series"),
            # retention and the hourly rollup walk by time alone.
            models.Index(fields=["minute"], name="metricpoint_minute"),
        ]

    def __str__(self) -> str:
        return f"{self.endpoint_id}/{self.version_id}/{self.component} @ {self.minute:%H:%M}"


class MetricHour(RollupFields):
    """Hourly rollup (the sum of an hour's minute rows), kept for three months."""

    hour = models.DateTimeField()

    class Meta:
        ordering = ["endpoint_id", "hour"]
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "version", "component", "hour"], name="metrichour_unique"
            )
        ]
        indexes = [
            models.Index(fields=["endpoint", "component", "hour"], name="metrichour_series"),
            models.Index(fields=["hour"], name="metrichour_hour"),
        ]

    def __str__(self) -> str:
        return f"{self.endpoint_id}/{self.version_id}/{self.component} @ {self.hour:%d %H}h"


class ScrapeState(models.Model):
    """The last raw counter values read from one scrape target, to turn counters into deltas.

    `values` maps a series key (sample name and labels) to its last value; `process_start` is the
    target's `process_start_time_seconds`, so a restart is recognised even when the new counters
    already exceed the old ones.
    """

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="+")
    # "gateway" or "server:v<version id>:<url>".
    target = models.CharField(max_length=600)
    component = models.CharField(max_length=8, choices=Component.choices)
    version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    url = models.CharField(max_length=500)
    values = models.JSONField(default=dict, blank=True)
    process_start = models.FloatField(null=True, blank=True)
    # When the fetch whose values are stored began: an older fetch that commits late is stale.
    fetched_at = models.DateTimeField(null=True, blank=True)
    scraped_at = models.DateTimeField(null=True, blank=True)
    duration_seconds = models.FloatField(null=True, blank=True)
    failures = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["endpoint_id", "target"]
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "target"], name="scrapestate_unique")
        ]

    def __str__(self) -> str:
        return f"{self.endpoint_id} {self.target}"


class DriftVerdict(models.TextChoices):
    """A drift report's conclusion for the whole input."""

    NO_DRIFT = "no_drift", "No drift"
    DRIFT = "drift", "Drift"
    INSUFFICIENT_DATA = "insufficient_data", "Not enough data"


class DriftReport(models.Model):
    """Live inputs of one serving version over a window, compared with its reference profile.

    `features` = [{name, kind, live_count, psi, wasserstein, js_distance, drifting, reference,
    live}] where reference/live are the aligned bucket proportions. Every report is kept.
    """

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="drift_reports")
    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    rows = models.PositiveBigIntegerField(default=0)
    features = models.JSONField(default=list)
    prediction = models.JSONField(null=True, blank=True)
    # {feature: effect size ÷ its threshold} (1 = at the threshold), for the feature × time heatmap
    # without loading every report's histograms.
    scores = models.JSONField(default=dict)
    drifting_share = models.FloatField(default=0.0)
    verdict = models.CharField(max_length=20, choices=DriftVerdict.choices)
    # The thresholds this report was judged with (they may change later).
    thresholds = models.JSONField(default=dict)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["endpoint", "version", "-created_at"], name="driftreport_latest")
        ]

    def __str__(self) -> str:
        return f"drift of {self.version_id} on {self.endpoint_id}: {self.verdict}"


class AlertMetric(models.TextChoices):
    """What an alert rule watches."""

    ERROR_RATE = "error_rate", "Error rate (5xx share)"
    LATENCY_P95 = "latency_p95", "Latency p95 (seconds)"
    DRIFT = "drift", "Drifting feature share"


class Comparator(models.TextChoices):
    """How the watched value is compared with the threshold."""

    ABOVE = "gt", "above"
    BELOW = "lt", "below"


class AlertRule(TimeStampedModel):
    """A condition on one endpoint's metric that opens an alert once it has held for `for`."""

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="alert_rules")
    name = models.CharField(max_length=100)
    metric = models.CharField(max_length=16, choices=AlertMetric.choices)
    comparator = models.CharField(max_length=2, choices=Comparator.choices, default="gt")
    threshold = models.FloatField()
    window_minutes = models.PositiveIntegerField(default=5)
    for_minutes = models.PositiveIntegerField(default=0)
    is_enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Evaluation state: since when the condition has been true (no alert open yet) or false
    # (an alert open); hysteresis in both directions keeps alerts from flapping.
    breaching_since = models.DateTimeField(null=True, blank=True)
    clear_since = models.DateTimeField(null=True, blank=True)
    last_value = models.FloatField(null=True, blank=True)
    last_evaluated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["endpoint_id", "name"]

    def __str__(self) -> str:
        return f"{self.name}: {self.metric} {self.get_comparator_display()} {self.threshold}"

    def breaches(self, value: float | None) -> bool:
        """Whether a value meets the rule's condition (no data never does)."""
        if value is None:
            return False
        return (
            value > self.threshold
            if self.comparator == Comparator.ABOVE
            else value < self.threshold
        )


class AlertStatus(models.TextChoices):
    """An alert is open while its condition holds, then resolved for good."""

    OPEN = "open", "Open"
    RESOLVED = "resolved", "Resolved"


class Alert(models.Model):
    """One episode of a rule's condition holding; at most one open alert per rule."""

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="alerts")
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="alerts")
    status = models.CharField(max_length=10, choices=AlertStatus.choices, default="open")
    opened_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    opening_value = models.FloatField(null=True, blank=True)
    peak_value = models.FloatField(null=True, blank=True)
    last_value = models.FloatField(null=True, blank=True)
    message = models.CharField(max_length=500)

    class Meta:
        ordering = ["-opened_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["rule"], condition=models.Q(status="open"), name="alert_one_open_per_rule"
            )
        ]
        indexes = [models.Index(fields=["endpoint", "-opened_at"], name="alert_endpoint_recent")]

    def __str__(self) -> str:
        return f"{self.status} alert {self.message}"


# --- prediction log, feedback, experiments, guardrails --------------------------------------------


class PredictionRecord(models.Model):
    """One answer the gateway gave (or a shadow computed), shipped in batches by the gateway.

    `output` is the first output of the answer, truncated; `predicted_class` / `predicted_value`
    are what feedback is judged against (a label for classifiers, a number for regressors).
    """

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="+")
    version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    version_label = models.CharField(max_length=100)
    request_id = models.CharField(max_length=128)
    role = models.CharField(max_length=16)
    created_at = models.DateTimeField()
    received_at = models.DateTimeField(default=timezone.now)
    status = models.PositiveSmallIntegerField()
    latency_seconds = models.FloatField(default=0.0)
    output = models.JSONField(null=True, blank=True)
    predicted_class = models.CharField(max_length=100, blank=True)
    predicted_value = models.FloatField(null=True, blank=True)
    # Present only for the share of requests the endpoint samples (its PredictionLogConfig).
    inputs = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "request_id", "version_label"], name="prediction_unique"
            )
        ]
        indexes = [
            models.Index(fields=["endpoint", "created_at"], name="prediction_recent"),
            models.Index(fields=["endpoint", "request_id"], name="prediction_request"),
            models.Index(fields=["received_at"], name="prediction_retention"),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} on {self.version_label} ({self.role})"

    @property
    def is_server_error(self) -> bool:
        """Whether the caller got a 5xx (the error-rate numerator)."""
        return self.status >= 500


class PredictionLogConfig(models.Model):
    """How much of an endpoint's traffic the gateway logs with its inputs (0 = none)."""

    endpoint = models.OneToOneField(
        Endpoint, primary_key=True, on_delete=models.CASCADE, related_name="prediction_log_config"
    )
    input_sample_percent = models.FloatField(default=0.0)

    def __str__(self) -> str:
        return f"inputs of {self.input_sample_percent:g} % of requests of {self.endpoint_id}"


class Feedback(models.Model):
    """The ground truth (`label`) or a reward (`value`) for one request, joined to the version
    that answered it: `correct` for class labels, `error` (absolute) for numbers."""

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="+")
    version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    request_id = models.CharField(max_length=128)
    created_at = models.DateTimeField(default=timezone.now)
    label = models.CharField(max_length=100, blank=True)
    value = models.FloatField(null=True, blank=True)
    correct = models.BooleanField(null=True, blank=True)
    error = models.FloatField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "feedback"
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "request_id"], name="feedback_unique")
        ]
        indexes = [
            models.Index(fields=["endpoint", "version", "created_at"], name="feedback_series"),
        ]

    def __str__(self) -> str:
        return f"feedback for {self.request_id}"


class ExperimentMetric(models.TextChoices):
    """What an experiment compares: an outcome from feedback, or a serving metric."""

    ACCURACY = "accuracy", "Accuracy (feedback labels)"
    REWARD = "reward", "Mean reward (feedback values)"
    ERROR_RATE = "error_rate", "Error rate (5xx share)"
    LATENCY = "latency", "Mean latency (seconds)"


# Direction of each metric: whether a higher number is the better one.
HIGHER_IS_BETTER = {
    ExperimentMetric.ACCURACY: True,
    ExperimentMetric.REWARD: True,
    ExperimentMetric.ERROR_RATE: False,
    ExperimentMetric.LATENCY: False,
}


class ExperimentStatus(models.TextChoices):
    """Draft until started; running until stopped by a person or concluded by a verdict."""

    DRAFT = "draft", "Draft"
    RUNNING = "running", "Running"
    STOPPED = "stopped", "Stopped"
    CONCLUDED = "concluded", "Concluded"


EXPERIMENT_TERMINAL = {ExperimentStatus.STOPPED, ExperimentStatus.CONCLUDED}


class ExperimentVerdict(models.TextChoices):
    """What the sequential test says about treatment − control."""

    BETTER = "better", "Treatment is better"
    WORSE = "worse", "Treatment is worse"
    INCONCLUSIVE = "inconclusive", "Not known yet"


class Experiment(TimeStampedModel):
    """An A/B test on an endpoint: control vs treatment, judged by an always-valid sequential test.

    `lower`/`upper` are the always-valid interval of the latest look (recomputed from all outcomes
    each time, centred on the estimate); `result` is that look (arms, difference, p-value,
    guardrails). `ended_reason` says why a running experiment was stopped early.
    """

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="experiments")
    name = models.CharField(max_length=100)
    description = models.CharField(max_length=500, blank=True)
    control = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    treatment = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    treatment_percent = models.PositiveSmallIntegerField(default=50)
    sticky = models.JSONField(null=True, blank=True)
    metric = models.CharField(max_length=16, choices=ExperimentMetric.choices)
    guardrails = models.JSONField(default=list, blank=True)
    alpha = models.FloatField(default=0.05)
    power = models.FloatField(default=0.8)
    minimum_effect = models.FloatField()
    # The outcome's variance assumed for planning (defaults to p(1-p) at p = 0.5 for rates).
    planning_variance = models.FloatField(default=0.25)
    planned_sample_size = models.PositiveIntegerField(default=0)
    auto_promote = models.BooleanField(default=False)
    auto_stop_loser = models.BooleanField(default=False)
    status = models.CharField(
        max_length=10, choices=ExperimentStatus.choices, default=ExperimentStatus.DRAFT
    )
    verdict = models.CharField(
        max_length=16, choices=ExperimentVerdict.choices, default=ExperimentVerdict.INCONCLUSIVE
    )
    lower = models.FloatField(null=True, blank=True)
    upper = models.FloatField(null=True, blank=True)
    result = models.JSONField(default=dict, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    ended_reason = models.CharField(max_length=300, blank=True)
    last_evaluated_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint"],
                condition=models.Q(status="running"),
                name="experiment_one_running_per_endpoint",
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_terminal(self) -> bool:
        """Stopped or concluded: nothing changes any more."""
        return self.status in EXPERIMENT_TERMINAL

    @property
    def higher_is_better(self) -> bool:
        """Whether a larger value of the primary metric is the better one."""
        return HIGHER_IS_BETTER[ExperimentMetric(self.metric)]


class ExperimentSnapshot(models.Model):
    """One look at a running experiment, kept for the cumulative chart."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="snapshots")
    created_at = models.DateTimeField(default=timezone.now)
    control_count = models.PositiveBigIntegerField()
    control_mean = models.FloatField()
    control_variance = models.FloatField()
    treatment_count = models.PositiveBigIntegerField()
    treatment_mean = models.FloatField()
    treatment_variance = models.FloatField()
    lower = models.FloatField(null=True, blank=True)
    upper = models.FloatField(null=True, blank=True)
    verdict = models.CharField(max_length=16, choices=ExperimentVerdict.choices)

    class Meta:
        ordering = ["experiment_id", "created_at", "id"]

    def __str__(self) -> str:
        return f"look at {self.experiment_id} @ {self.created_at:%H:%M}: {self.verdict}"


class PolicyMetric(models.TextChoices):
    """What a rollback criterion watches on the version under evaluation."""

    ERROR_RATE = "error_rate", "Error rate (5xx share)"
    LATENCY_P95 = "latency_p95", "Latency p95 (seconds)"
    ACCURACY = "accuracy", "Accuracy (feedback labels)"


class Inconclusive(models.TextChoices):
    """What to do when a criterion has too few samples to judge."""

    PAUSE = "pause", "Pause the rollout"
    ROLLBACK = "rollback", "Roll back"
    IGNORE = "ignore", "Ignore"


class PolicyScope(models.TextChoices):
    """When a policy is evaluated."""

    ROLLOUTS = "rollouts", "During rollouts only"
    ALWAYS = "always", "Always (also after promotion)"


class RollbackPolicy(TimeStampedModel):
    """An endpoint's guardrail: criteria that roll a bad version back, during rollouts or always.

    `criteria` = [{metric, comparator ("gt" | "lt"), threshold, relative_to_control (bool),
    window_minutes, minimum_samples}]; with `relative_to_control` the threshold is a ratio to the
    primary's value in the same window.
    """

    endpoint = models.OneToOneField(
        Endpoint, on_delete=models.CASCADE, related_name="rollback_policy"
    )
    criteria = models.JSONField(default=list)
    failure_limit = models.PositiveSmallIntegerField(default=1)
    on_inconclusive = models.CharField(
        max_length=10, choices=Inconclusive.choices, default=Inconclusive.PAUSE
    )
    scope = models.CharField(max_length=10, choices=PolicyScope.choices, default=PolicyScope.ALWAYS)
    dry_run = models.BooleanField(default=False)
    is_enabled = models.BooleanField(default=True)
    # Failing evaluations in a row (reset by a pass or a rollback).
    consecutive_failures = models.PositiveIntegerField(default=0)
    last_evaluated_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        verbose_name_plural = "rollback policies"

    def __str__(self) -> str:
        return f"rollback policy of {self.endpoint_id}"


class EvaluationOutcome(models.TextChoices):
    """An evaluation's conclusion."""

    PASSED = "passed", "Passed"
    FAILED = "failed", "Failed"
    INCONCLUSIVE = "inconclusive", "Inconclusive"


class EvaluationAction(models.TextChoices):
    """What an evaluation did about its conclusion."""

    NONE = "none", "Nothing"
    PAUSED = "paused", "Held the rollout"
    ROLLED_BACK = "rolled_back", "Rolled back"
    WOULD_ROLL_BACK = "would_roll_back", "Would roll back (dry run)"
    ROLLBACK_FAILED = "rollback_failed", "Could not roll back"


class PolicyEvaluation(models.Model):
    """One evaluation of a rollback policy; every one is kept, and a rollback names its own."""

    policy = models.ForeignKey(RollbackPolicy, on_delete=models.CASCADE, related_name="evaluations")
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    release_number = models.PositiveIntegerField(null=True, blank=True)
    version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    outcome = models.CharField(max_length=14, choices=EvaluationOutcome.choices)
    action = models.CharField(
        max_length=16, choices=EvaluationAction.choices, default=EvaluationAction.NONE
    )
    # [{metric, value, control_value, samples, limit, outcome, message}]
    results = models.JSONField(default=list)
    message = models.CharField(max_length=1000, blank=True)
    rollback_release_number = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["endpoint", "-created_at"], name="evaluation_recent"),
        ]

    def __str__(self) -> str:
        return f"evaluation {self.pk} of {self.endpoint_id}: {self.outcome}"
