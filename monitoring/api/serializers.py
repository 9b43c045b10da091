"""Input and output shapes of the monitoring API, so the schema types every operation.

Inputs are checked here for their shape; the services (guardrails, experiments, feedback) judge
the values with the readable messages the pages share.
"""

from rest_framework import serializers

from monitoring import selectors
from monitoring.models import Inconclusive, PolicyScope

# --- metrics and drift -----------------------------------------------------------------------


class MetricSeriesSerializer(serializers.Serializer):
    """Per-version series of an endpoint: requests/s, error rates, latency, traffic share."""

    endpoint = serializers.CharField()
    range = serializers.ChoiceField(choices=list(selectors.RANGES))
    step_seconds = serializers.IntegerField()
    source = serializers.CharField()
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    generated_at = serializers.DateTimeField()
    timestamps = serializers.ListField(child=serializers.DateTimeField())
    versions = serializers.ListField(child=serializers.DictField(child=serializers.JSONField()))


class DriftVersionSerializer(serializers.Serializer):
    """The latest drift report of one version."""

    version = serializers.CharField()
    version_id = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    window_start = serializers.DateTimeField()
    window_end = serializers.DateTimeField()
    rows = serializers.IntegerField()
    verdict = serializers.CharField()
    drifting_share = serializers.FloatField()
    thresholds = serializers.DictField(child=serializers.JSONField())
    features = serializers.ListField(child=serializers.DictField(child=serializers.JSONField()))
    prediction = serializers.JSONField(allow_null=True)


class DriftSummarySerializer(serializers.Serializer):
    """The latest drift report of every version of an endpoint."""

    endpoint = serializers.CharField()
    versions = DriftVersionSerializer(many=True)


# --- prediction log, feedback, shadow ---------------------------------------------------------


class PredictionBatchSerializer(serializers.Serializer):
    """A gateway's batch of prediction records."""

    records = serializers.ListField(child=serializers.DictField(child=serializers.JSONField()))


class PredictionBatchResultSerializer(serializers.Serializer):
    """How many records arrived and were stored, and the input sampling share to apply."""

    received = serializers.IntegerField()
    stored = serializers.IntegerField()
    input_sample_percent = serializers.FloatField()


class FeedbackItemSerializer(serializers.Serializer):
    """A label (classifiers), a value (regressors) or a reward for one answered request."""

    request_id = serializers.CharField(max_length=128)
    label = serializers.CharField(required=False)
    value = serializers.FloatField(required=False)


class FeedbackResultSerializer(serializers.Serializer):
    """What was stored, what was sent before, and request ids never logged."""

    accepted = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    unknown = serializers.ListField(child=serializers.CharField())


class FeedbackVersionSerializer(serializers.Serializer):
    """Live accuracy, error and reward of one version."""

    version = serializers.CharField()
    version_id = serializers.IntegerField()
    feedback = serializers.IntegerField()
    judged = serializers.IntegerField()
    accuracy = serializers.FloatField(allow_null=True)
    mean_absolute_error = serializers.FloatField(allow_null=True)
    mean_reward = serializers.FloatField(allow_null=True)


class FeedbackSummarySerializer(serializers.Serializer):
    """Live accuracy, error and reward per version."""

    versions = FeedbackVersionSerializer(many=True)


class ShadowTrendSerializer(serializers.Serializer):
    hour = serializers.DateTimeField()
    value = serializers.FloatField()
    pairs = serializers.IntegerField()


class ShadowSerializer(serializers.Serializer):
    """One shadow's agreement with (or distance from) the primary."""

    version = serializers.CharField()
    pairs = serializers.IntegerField()
    kind = serializers.CharField(help_text="`classifier` or `regressor`.")
    agreement_rate = serializers.FloatField(allow_null=True)
    mean_absolute_difference = serializers.FloatField(allow_null=True)
    trend = ShadowTrendSerializer(many=True)


class ShadowComparisonSerializer(serializers.Serializer):
    """Every shadow of the endpoint over the last 24 hours."""

    shadows = ShadowSerializer(many=True)


class PredictionLogSerializer(serializers.Serializer):
    """The share of requests (0-100 %) logged with their inputs."""

    input_sample_percent = serializers.FloatField()


# --- rollback policy ----------------------------------------------------------------------------


class CriterionSerializer(serializers.Serializer):
    """One guardrail: a metric compared with a threshold (or with the control's value)."""

    metric = serializers.CharField()
    comparator = serializers.CharField()
    threshold = serializers.FloatField()
    relative_to_control = serializers.BooleanField(required=False)
    window_minutes = serializers.IntegerField(required=False)
    minimum_samples = serializers.IntegerField(required=False)


class RollbackPolicyInputSerializer(serializers.Serializer):
    """A rollback policy to set (replaces the current one)."""

    criteria = CriterionSerializer(many=True)
    failure_limit = serializers.IntegerField(required=False, min_value=1, max_value=100)
    on_inconclusive = serializers.ChoiceField(choices=Inconclusive.choices, required=False)
    scope = serializers.ChoiceField(choices=PolicyScope.choices, required=False)
    dry_run = serializers.BooleanField(required=False)
    is_enabled = serializers.BooleanField(required=False)


class RollbackPolicySerializer(serializers.Serializer):
    """An endpoint's rollback policy and its running state."""

    criteria = serializers.ListField(child=serializers.DictField(child=serializers.JSONField()))
    failure_limit = serializers.IntegerField()
    on_inconclusive = serializers.ChoiceField(choices=Inconclusive.choices)
    scope = serializers.ChoiceField(choices=PolicyScope.choices)
    dry_run = serializers.BooleanField()
    is_enabled = serializers.BooleanField()
    consecutive_failures = serializers.IntegerField()
    last_evaluated_at = serializers.DateTimeField(allow_null=True)


class PolicyEvaluationSerializer(serializers.Serializer):
    """One evaluation of a rollback policy."""

    id = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    release = serializers.IntegerField(allow_null=True)
    version = serializers.CharField(allow_null=True)
    outcome = serializers.CharField()
    action = serializers.CharField()
    message = serializers.CharField(allow_blank=True)
    results = serializers.JSONField()
    rollback_release = serializers.IntegerField(allow_null=True)


class PolicyEvaluationListSerializer(serializers.Serializer):
    """The latest 50 evaluations, newest first."""

    evaluations = PolicyEvaluationSerializer(many=True)


# --- experiments ------------------------------------------------------------------------------


class ExperimentInputSerializer(serializers.Serializer):
    """A draft experiment: control against treatment on one endpoint."""

    endpoint = serializers.CharField(help_text="The endpoint's name.")
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(required=False, allow_blank=True)
    control = serializers.CharField(help_text="A version reference, e.g. `fraud:3`.")
    treatment = serializers.CharField(help_text="A version reference, e.g. `fraud:4`.")
    treatment_percent = serializers.FloatField(required=False)
    sticky = serializers.DictField(required=False, allow_null=True)
    metric = serializers.CharField()
    guardrails = serializers.ListField(required=False, allow_null=True)
    alpha = serializers.FloatField(required=False)
    power = serializers.FloatField(required=False)
    minimum_effect = serializers.FloatField()
    planning_variance = serializers.FloatField(required=False, allow_null=True)
    auto_promote = serializers.BooleanField(required=False)
    auto_stop_loser = serializers.BooleanField(required=False)


class ExperimentSerializer(serializers.Serializer):
    """An experiment with its per-arm results and verdict."""

    id = serializers.IntegerField()
    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    endpoint = serializers.CharField()
    control = serializers.CharField()
    treatment = serializers.CharField()
    treatment_percent = serializers.FloatField()
    sticky = serializers.JSONField(allow_null=True)
    metric = serializers.CharField()
    guardrails = serializers.JSONField(allow_null=True)
    alpha = serializers.FloatField()
    power = serializers.FloatField()
    minimum_effect = serializers.FloatField()
    planned_sample_size = serializers.IntegerField(allow_null=True)
    progress = serializers.JSONField(allow_null=True)
    auto_promote = serializers.BooleanField()
    auto_stop_loser = serializers.BooleanField()
    status = serializers.CharField()
    verdict = serializers.CharField(allow_blank=True)
    verdict_text = serializers.CharField(allow_blank=True)
    arms = serializers.DictField(child=serializers.JSONField(allow_null=True))
    difference = serializers.FloatField(allow_null=True)
    confidence_interval = serializers.ListField(child=serializers.FloatField(allow_null=True))
    p_value = serializers.FloatField(allow_null=True)
    guardrail_status = serializers.ListField(child=serializers.JSONField())
    started_at = serializers.DateTimeField(allow_null=True)
    ended_at = serializers.DateTimeField(allow_null=True)
    last_evaluated_at = serializers.DateTimeField(allow_null=True)
