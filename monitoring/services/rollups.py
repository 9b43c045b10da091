"""Rollup upkeep: hourly rows from minute rows, and retention."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Min, Q
from django.utils import timezone

from monitoring import histograms
from monitoring.exposition import Contribution
from monitoring.models import (
    MetricHour,
    MetricPoint,
    ScrapeState,
)

ROLLUP_SUM_FIELDS = (*Contribution.COUNTERS, *Contribution.FLOATS)


def _sum_rows(rows) -> dict[tuple[int, int, str], dict]:
    """Add minute rows up per (endpoint, version, component)."""
    totals: dict[tuple[int, int, str], dict] = {}
    for row in rows:
        key = (row.endpoint_id, row.version_id, row.component)
        total = totals.get(key)
        if total is None:
            total = totals[key] = dict.fromkeys(ROLLUP_SUM_FIELDS, 0)
            total.update(latency={}, inference={}, prediction={}, features={}, variant="")
        for name in ROLLUP_SUM_FIELDS:
            total[name] += getattr(row, name)
        for name in Contribution.HISTOGRAMS:
            total[name] = histograms.merge(total[name], getattr(row, name))
        total["features"] = histograms.merge_features(total["features"], row.features)
        total["variant"] = row.variant or total["variant"]
    return totals


def metrics_rollup_hours(*, now: datetime | None = None) -> int:
    """Recompute hourly rows from minute rows for every complete hour not yet rolled up.

    The last rolled-up hour is recomputed too (a scrape may have committed late), so running it
    twice, or after an outage, gives the same rows. Returns the number of hours written.
    """
    now = now or timezone.now()
    current_hour = now.replace(minute=0, second=0, microsecond=0)
    latest = MetricHour.objects.order_by("-hour").values_list("hour", flat=True).first()
    if latest is not None:
        start = min(latest, current_hour - timedelta(hours=1))
    else:
        oldest = MetricPoint.objects.aggregate(first=Min("minute"))["first"]
        if oldest is None:
            return 0
        start = oldest.replace(minute=0, second=0, microsecond=0)
    start = max(start, now - timedelta(days=settings.METRICS_MINUTE_RETENTION_DAYS))
    start = start.replace(minute=0, second=0, microsecond=0)
    hours = 0
    hour = start
    while hour < current_hour:
        following = hour + timedelta(hours=1)
        rows = MetricPoint.objects.filter(minute__gte=hour, minute__lt=following).order_by("minute")
        totals = _sum_rows(rows.iterator(chunk_size=2000))
        with transaction.atomic():
            MetricHour.objects.filter(hour=hour).delete()
            MetricHour.objects.bulk_create(
                MetricHour(
                    endpoint_id=endpoint_id,
                    version_id=version_id,
                    component=component,
                    hour=hour,
                    **values,
                )
                for (endpoint_id, version_id, component), values in totals.items()
            )
        hours += 1
        hour = following
    return hours


def metrics_prune(*, now: datetime | None = None) -> dict[str, int]:
    """Drop rollups past their retention, and the scrape states of targets long gone."""
    now = now or timezone.now()
    minutes, _ = MetricPoint.objects.filter(
        minute__lt=now - timedelta(days=settings.METRICS_MINUTE_RETENTION_DAYS)
    ).delete()
    hours, _ = MetricHour.objects.filter(
        hour__lt=now - timedelta(days=settings.METRICS_HOUR_RETENTION_DAYS)
    ).delete()
    # A target unseen for the minute retention is gone (its server was replaced); forgetting it
    # sooner could count a still-running process's totals twice if it answered again. States
    # that never succeeded hold no counter values, so they can go at once.
    forgotten = now - timedelta(days=settings.METRICS_MINUTE_RETENTION_DAYS)
    states, _ = ScrapeState.objects.filter(
        Q(fetched_at__lt=forgotten) | Q(fetched_at__isnull=True)
    ).delete()
    return {"minutes": minutes, "hours": hours, "scrape_states": states}
