"""A/B experiments on an endpoint: the split, the per-arm outcomes, and a sequential verdict
(`monitoring.sequential`, mixture SPRT) that stays valid however often it is looked at.

Outcomes per arm come from the prediction log (error rate, latency: every answered request) or
from feedback joined to it (accuracy, reward). Guardrail metrics are judged with the same test:
a guardrail is breached when the treatment is proven worse on it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Case, Count, F, FloatField, IntegerField, Sum, When
from django.db.models.query import QuerySet
from django.http import Http404

from accounts.actor import Actor
from deployments.models import VariantRole
from monitoring import sequential
from monitoring.models import (
    Experiment,
    ExperimentMetric,
    ExperimentStatus,
    ExperimentVerdict,
    Feedback,
    PredictionRecord,
)

GUARDRAIL_METRICS = {ExperimentMetric.ERROR_RATE, ExperimentMetric.LATENCY}
# Below this many outcomes per arm the variance estimate is too rough to judge on.
MINIMUM_SAMPLES = 100


# --- arms -------------------------------------------------------------------------------------


def arm_summary(
    *,
    endpoint_id: int,
    version_id: int,
    metric: str,
    since: datetime,
    until: datetime | None = None,
) -> sequential.ArmSummary:
    """Count, mean and variance of one arm's outcomes from `since` up to (not including) `until`
    (an experiment's end: what arrives after an arm stopped serving is not counted)."""
    window = {"created_at__gte": since}
    if until is not None:
        window["created_at__lt"] = until
    if metric in (ExperimentMetric.ACCURACY, ExperimentMetric.REWARD):
        rows = Feedback.objects.filter(endpoint_id=endpoint_id, version_id=version_id, **window)
        if metric == ExperimentMetric.ACCURACY:
            one = Case(When(correct=True, then=1), default=0, output_field=IntegerField())
            totals = rows.filter(correct__isnull=False).aggregate(
                count=Count("id"), total=Sum(one), squares=Sum(one)
            )
        else:
            totals = rows.filter(value__isnull=False).aggregate(
                count=Count("id"),
                total=Sum("value"),
                squares=Sum(F("value") * F("value"), output_field=FloatField()),
            )
    else:
        rows = PredictionRecord.objects.filter(
            endpoint_id=endpoint_id, version_id=version_id, **window
        ).exclude(role=VariantRole.SHADOW)
        if metric == ExperimentMetric.ERROR_RATE:
            one = Case(When(status__gte=500, then=1), default=0, output_field=IntegerField())
            totals = rows.aggregate(count=Count("id"), total=Sum(one), squares=Sum(one))
        else:
            totals = rows.filter(status=200).aggregate(
                count=Count("id"),
                total=Sum("latency_seconds"),
                squares=Sum(F("latency_seconds") * F("latency_seconds"), output_field=FloatField()),
            )
    return sequential.ArmSummary.from_sums(
        count=totals["count"] or 0,
        total=float(totals["total"] or 0.0),
        total_of_squares=float(totals["squares"] or 0.0),
    )


# --- reads ------------------------------------------------------------------------------------


def experiment_list_for_actor(*, actor: Actor) -> QuerySet[Experiment]:
    """Experiments on the actor's teams' endpoints, newest first."""
    return Experiment.objects.filter(endpoint__team_id__in=actor.team_ids).select_related(
        "endpoint", "control__model", "treatment__model"
    )


def experiment_for_actor(*, actor: Actor, pk: Any) -> Experiment:
    """One experiment of the actor's teams; another team's does not exist (404)."""
    try:
        pk = int(pk)
    except (TypeError, ValueError):
        raise Http404("No such experiment.") from None
    experiment = experiment_list_for_actor(actor=actor).filter(pk=pk).first()
    if experiment is None:
        raise Http404("No such experiment.")
    return experiment


def verdict_sentence(experiment: Experiment) -> str:
    """The verdict in plain words, with its numbers."""
    result = experiment.result or {}
    label = ExperimentMetric(experiment.metric).label.split(" (")[0].lower()
    treatment, control = experiment.treatment.reference, experiment.control.reference
    if experiment.status == ExperimentStatus.STOPPED and experiment.ended_reason:
        reason = experiment.ended_reason
        ended = f"{reason[:1].upper()}{reason[1:]}, before a verdict"
        if not result:
            return f"{ended}; no outcomes were measured."
        counts = (
            result.get("control", {}).get("count", 0),
            result.get("treatment", {}).get("count", 0),
        )
        return (
            f"{ended}: at the last look {treatment} − {control} on {label} was "
            f"{result.get('difference', 0.0):+.4g} ({counts[0]} control and {counts[1]} treatment "
            "outcomes); outcomes after the end are not counted."
        )
    if not result:
        return "No data yet: the verdict needs outcomes from both versions."
    difference = result.get("difference", 0.0)
    lower, upper = experiment.lower, experiment.upper
    interval = (
        f"{difference:+.4g} (confidence interval {lower:+.4g} to {upper:+.4g}, "
        f"α = {experiment.alpha:g})"
        if lower is not None and upper is not None
        else f"{difference:+.4g}"
    )
    for guardrail in result.get("guardrails", []):
        if guardrail.get("status") == "breached":
            return (
                f"{treatment} breaks the {guardrail['metric'].replace('_', ' ')} guardrail: "
                f"it is worse than {control} by {guardrail['difference']:+.4g}."
            )
    if experiment.verdict == ExperimentVerdict.BETTER:
        return f"{treatment} is better than {control} on {label}: difference {interval}."
    if experiment.verdict == ExperimentVerdict.WORSE:
        return f"{treatment} is worse than {control} on {label}: difference {interval}."
    counts = result.get("control", {}).get("count", 0), result.get("treatment", {}).get("count", 0)
    return (
        f"Not known yet: {treatment} − {control} on {label} is {interval}, which still "
        f"includes no difference ({counts[0]} control and {counts[1]} treatment outcomes)."
    )


def experiment_progress(experiment: Experiment) -> float:
    """The smaller arm's outcomes as a share of the planned sample size (0-1)."""
    result = experiment.result or {}
    smaller = min(
        result.get("control", {}).get("count", 0), result.get("treatment", {}).get("count", 0)
    )
    if not experiment.planned_sample_size:
        return 0.0
    return min(1.0, smaller / experiment.planned_sample_size)
