"""The prediction log (ingested from gateways), feedback joined to it, and what they tell:
live accuracy or error per version, and how a shadow agrees with the primary.

The gateway ships records with the endpoint's own token; feedback arrives from callers by
request id, in batches, and is judged against the logged answer of the version that served the
request (never a shadow's).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Avg, Case, Count, IntegerField, Q, Sum, When
from django.utils import timezone

from deployments.models import Endpoint
from monitoring.models import Feedback, PredictionLogConfig, PredictionRecord
from registry.models import ModelVersion

MAX_SHADOW_PAIRS = 20_000


def input_sample_percent(endpoint: Endpoint) -> float:
    """The share of requests whose inputs the endpoint's gateway should log."""
    config = PredictionLogConfig.objects.filter(endpoint=endpoint).first()
    return config.input_sample_percent if config is not None else 0.0


def endpoint_page_accuracy(*, endpoint: Endpoint) -> dict[str, Any]:
    """The endpoint page's accuracy panel (registered as a deployments page hook)."""
    return {"accuracy": feedback_summary(endpoint=endpoint)}


def feedback_summary(*, endpoint: Endpoint, since: datetime | None = None) -> list[dict[str, Any]]:
    """Live accuracy (labels), mean absolute error (numbers) and mean reward per version."""
    rows = Feedback.objects.filter(endpoint=endpoint, version__isnull=False)
    if since is not None:
        rows = rows.filter(created_at__gte=since)
    summary = (
        rows.values("version_id")
        .annotate(
            count=Count("id"),
            judged=Count("id", filter=Q(correct__isnull=False)),
            correct_count=Sum(
                Case(When(correct=True, then=1), default=0, output_field=IntegerField())
            ),
            mean_error=Avg("error"),
            errors=Count("id", filter=Q(error__isnull=False)),
            mean_reward=Avg("value"),
            rewards=Count("id", filter=Q(value__isnull=False)),
        )
        .order_by("version_id")
    )
    references = {
        version.pk: version.reference
        for version in ModelVersion.objects.select_related("model").filter(
            pk__in=[row["version_id"] for row in summary]
        )
    }
    return [
        {
            "version": references.get(row["version_id"], str(row["version_id"])),
            "version_id": row["version_id"],
            "feedback": row["count"],
            "judged": row["judged"],
            "accuracy": row["correct_count"] / row["judged"] if row["judged"] else None,
            "mean_absolute_error": row["mean_error"] if row["errors"] else None,
            "mean_reward": row["mean_reward"] if row["rewards"] else None,
        }
        for row in summary
    ]


def shadow_comparison(
    *, endpoint: Endpoint, hours: int = 24, now: datetime | None = None
) -> list[dict[str, Any]]:
    """For each shadow version: how often it agrees with the primary's answer to the same
    request (same class), or how far its number is from it (mean absolute difference), overall
    and per hour, from the last MAX_SHADOW_PAIRS logged pairs."""
    now = now or timezone.now()
    start = now - timedelta(hours=hours)
    shadows = list(
        PredictionRecord.objects.filter(
            endpoint=endpoint, role="shadow", created_at__gte=start, status=200
        )
        .order_by("-created_at")
        .values("request_id", "version_label", "created_at", "predicted_class", "predicted_value")[
            :MAX_SHADOW_PAIRS
        ]
    )
    served = {
        row["request_id"]: row
        for row in PredictionRecord.objects.filter(
            endpoint=endpoint, request_id__in={row["request_id"] for row in shadows}, status=200
        )
        .exclude(role="shadow")
        .values("request_id", "version_label", "predicted_class", "predicted_value")
    }
    pairs: dict[str, list[tuple[datetime, bool | None, float | None]]] = defaultdict(list)
    for shadow in shadows:
        primary = served.get(shadow["request_id"])
        if primary is None:
            continue
        if primary["predicted_class"] or shadow["predicted_class"]:
            agreed = primary["predicted_class"] == shadow["predicted_class"]
            pairs[shadow["version_label"]].append((shadow["created_at"], agreed, None))
        elif primary["predicted_value"] is not None and shadow["predicted_value"] is not None:
            difference = abs(primary["predicted_value"] - shadow["predicted_value"])
            pairs[shadow["version_label"]].append((shadow["created_at"], None, difference))
    comparisons = []
    for version, entries in sorted(pairs.items()):
        agreements = [agreed for _, agreed, _ in entries if agreed is not None]
        differences = [difference for _, _, difference in entries if difference is not None]
        hourly: dict[datetime, list] = defaultdict(list)
        for moment, agreed, difference in entries:
            hourly[moment.replace(minute=0, second=0, microsecond=0)].append(
                float(agreed) if agreed is not None else difference
            )
        comparisons.append(
            {
                "version": version,
                "pairs": len(entries),
                "kind": "classifier" if agreements else "regressor",
                "agreement_rate": sum(agreements) / len(agreements) if agreements else None,
                "mean_absolute_difference": (
                    sum(differences) / len(differences) if differences else None
                ),
                "trend": [
                    {
                        "hour": hour.isoformat(),
                        "value": sum(values) / len(values),
                        "pairs": len(values),
                    }
                    for hour, values in sorted(hourly.items())
                ],
            }
        )
    return comparisons
