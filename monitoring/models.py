"""Metric rollups, drift reports, alert rules and alerts, and outgoing webhooks."""

import hashlib
import hmac
import secrets
import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from accounts.models import Team
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


class WebhookEvent(models.TextChoices):
    """Events a webhook can subscribe to."""

    VERSION_READY = "version.ready", "A model version is ready"
    ALIAS_MOVED = "alias.moved", "An alias moved"
    RELEASE_LIVE = "release.live", "A release went live"
    ROLLBACK = "endpoint.rollback", "An endpoint rolled back"
    ALERT_OPENED = "alert.opened", "An alert opened"
    ALERT_RESOLVED = "alert.resolved", "An alert resolved"
    DRIFT_DETECTED = "drift.detected", "Drift detected"
    PING = "ping", "Test ping"


def new_secret_salt() -> str:
    """A fresh random salt for a webhook's signing secret."""
    return secrets.token_hex(16)


class Webhook(TimeStampedModel):
    """An HTTPS (or HTTP) URL of a team that receives signed JSON events.

    The signing secret is derived from SECRET_KEY and a per-webhook salt, so a database dump alone
    does not reveal it; rotating replaces the salt.
    """

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="webhooks")
    name = models.CharField(max_length=100)
    url = models.URLField(max_length=2000)
    events = models.JSONField(default=list)
    is_active = models.BooleanField(default=True)
    secret_salt = models.CharField(max_length=64, default=new_secret_salt, editable=False)
    # A host name an installation admin allowed to resolve to internal addresses (an on-premise
    # receiver); empty = only public addresses are ever contacted.
    allowed_host = models.CharField(max_length=255, blank=True)
    allowed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["team_id", "name"]

    def __str__(self) -> str:
        return self.name

    @property
    def secret(self) -> str:
        """The HMAC-SHA256 signing secret receivers verify with."""
        message = f"modeldeck-webhook:{self.pk}:{self.secret_salt}".encode()
        return hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).hexdigest()


class DeliveryStatus(models.TextChoices):
    """Pending until delivered, or failed for good after the last attempt."""

    PENDING = "pending", "Pending"
    SUCCEEDED = "succeeded", "Delivered"
    FAILED = "failed", "Failed"


class WebhookDelivery(models.Model):
    """One event for one webhook, retried with exponential backoff until it lands or gives up."""

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    delivery_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    event = models.CharField(max_length=32)
    payload = models.JSONField(default=dict)
    status = models.CharField(
        max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=1000, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="delivery_due"),
            models.Index(fields=["webhook", "-created_at"], name="delivery_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.event} to {self.webhook_id} ({self.status})"
