"""Guardrail reads: what a version measured over a window, whether a canary step may move on,
and an endpoint's latest evaluations (the policy and its evaluation are in
`monitoring.services.rollback_policies`)."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Case, Count, IntegerField, Sum, When

from deployments.models import Endpoint, Release
from monitoring import histograms
from monitoring.models import (
    Component,
    EvaluationOutcome,
    Feedback,
    Inconclusive,
    MetricPoint,
    PolicyEvaluation,
    PolicyMetric,
    RollbackPolicy,
)


def measure(
    *, endpoint_id: int, version_id: int, metric: str, start: datetime, end: datetime
) -> tuple[float | None, int]:
    """A version's value of `metric` over [start, end] and how many samples it rests on.

    Serving metrics come from the gateway's minute rollups (what callers saw); accuracy from
    feedback joined to the prediction log.
    """
    if metric == PolicyMetric.ACCURACY:
        one = Case(When(correct=True, then=1), default=0, output_field=IntegerField())
        totals = Feedback.objects.filter(
            endpoint_id=endpoint_id,
            version_id=version_id,
            correct__isnull=False,
            created_at__gte=start,
            created_at__lte=end,
        ).aggregate(count=Count("id"), correct=Sum(one))
        count = totals["count"] or 0
        return ((totals["correct"] or 0) / count if count else None), count
    rows = MetricPoint.objects.filter(
        endpoint_id=endpoint_id,
        version_id=version_id,
        component=Component.GATEWAY,
        minute__gte=start.replace(second=0, microsecond=0),
        minute__lte=end,
    )
    if metric == PolicyMetric.ERROR_RATE:
        totals = rows.aggregate(requests=Sum("requests"), errors=Sum("server_errors"))
        requests = totals["requests"] or 0
        return ((totals["errors"] or 0) / requests if requests else None), requests
    merged: dict = {}
    requests = 0
    for latency, count in rows.values_list("latency", "requests"):
        merged = histograms.merge(merged, latency)
        requests += count
    return histograms.quantile(merged, 0.95), requests


def rollout_step_allowed(*, endpoint: Endpoint, release: Release) -> tuple[bool, str]:
    """Whether a baked canary step may move on: with an enabled policy, only when its latest
    evaluation of this release passed (or was inconclusive with on_inconclusive = ignore)."""
    policy = RollbackPolicy.objects.filter(endpoint=endpoint, is_enabled=True).first()
    if policy is None:
        return True, "no rollback policy"
    latest = (
        PolicyEvaluation.objects.filter(endpoint=endpoint, release_number=release.number)
        .order_by("-created_at", "-id")
        .first()
    )
    if latest is None:
        return False, "waiting for the rollback policy's first evaluation of this step"
    if latest.outcome == EvaluationOutcome.PASSED:
        return True, f"evaluation {latest.pk} passed"
    if (
        latest.outcome == EvaluationOutcome.INCONCLUSIVE
        and policy.on_inconclusive == Inconclusive.IGNORE
    ):
        return True, f"evaluation {latest.pk} was inconclusive (ignored by the policy)"
    return False, f"evaluation {latest.pk} {latest.outcome}: {latest.message}"


def policy_evaluations(*, endpoint: Endpoint, limit: int = 50) -> list[PolicyEvaluation]:
    """An endpoint's latest evaluations, newest first."""
    return list(
        PolicyEvaluation.objects.filter(endpoint=endpoint)
        .select_related("version__model")
        .order_by("-created_at", "-id")[:limit]
    )
