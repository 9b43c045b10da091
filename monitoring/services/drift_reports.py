"""Drift reports: a serving version's live inputs against its reference profile."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from deployments.models import Endpoint, EndpointStatus
from events.models import EventKind
from events.services import event_record
from monitoring import drift, histograms
from monitoring.models import (
    Component,
    DriftReport,
    DriftVerdict,
    MetricPoint,
)
from registry.models import ModelVersion

DRIFT_STATUSES = (EndpointStatus.LIVE, EndpointStatus.DEGRADED)


def _thresholds() -> drift.Thresholds:
    return drift.Thresholds(
        psi=float(settings.DRIFT_PSI_THRESHOLD),
        js_distance=float(settings.DRIFT_JS_THRESHOLD),
        dataset_share=float(settings.DRIFT_DATASET_SHARE),
        min_rows=int(settings.DRIFT_MIN_ROWS),
    )


def live_histograms(
    *, endpoint: Endpoint, version: ModelVersion, start: datetime, end: datetime
) -> tuple[dict, dict]:
    """The version servers' feature and prediction histograms summed over a window."""
    features: dict = {}
    prediction: dict = {}
    rows = MetricPoint.objects.filter(
        endpoint=endpoint,
        version=version,
        component=Component.SERVER,
        minute__gte=start,
        minute__lt=end,
    ).values_list("features", "prediction")
    for row_features, row_prediction in rows:
        features = histograms.merge_features(features, row_features)
        prediction = histograms.merge(prediction, row_prediction)
    return features, prediction


def drift_report_create(
    *, endpoint: Endpoint, version: ModelVersion, now: datetime | None = None
) -> DriftReport | None:
    """Compare a serving version's live inputs over the drift window with its reference profile.

    Returns None when the version has no usable profile. Emits `drift.detected` when the
    verdict turns to drift.
    """
    profile = version.reference_profile
    if not isinstance(profile, dict) or not profile.get("features"):
        return None
    now = now or timezone.now()
    end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    start = end - timedelta(minutes=int(settings.DRIFT_WINDOW_MINUTES))
    features, prediction = live_histograms(endpoint=endpoint, version=version, start=start, end=end)
    thresholds = _thresholds()
    result = drift.compare(profile, features, prediction or None, thresholds)
    scores = {
        entry["name"]: round(entry["score"] / entry["threshold"], 4) if entry["threshold"] else 0
        for entry in result["features"]
        if entry["enough_data"] and entry["score"] is not None
    }
    previous = (
        DriftReport.objects.filter(endpoint=endpoint, version=version)
        .order_by("-created_at", "-id")
        .values_list("verdict", flat=True)
        .first()
    )
    with transaction.atomic():
        report = DriftReport.objects.create(
            endpoint=endpoint,
            version=version,
            created_at=now,
            window_start=start,
            window_end=end,
            rows=result["rows"],
            features=result["features"],
            prediction=result["prediction"],
            scores=scores,
            drifting_share=result["drifting_share"],
            verdict=result["verdict"],
            thresholds={
                "psi": thresholds.psi,
                "js_distance": thresholds.js_distance,
                "dataset_share": thresholds.dataset_share,
                "min_rows": thresholds.min_rows,
                "skipped": result["skipped"],
            },
        )
        if report.verdict == DriftVerdict.DRIFT and previous != DriftVerdict.DRIFT:
            event_record(
                team=endpoint.team,
                kind=EventKind.DRIFT_DETECTED,
                payload={
                    "endpoint": endpoint.name,
                    "version": version.reference,
                    "drifting_share": report.drifting_share,
                    "drifting_features": [e["name"] for e in report.features if e["drifting"]],
                    "report_id": report.pk,
                },
            )
    return report


def serving_versions(endpoint: Endpoint) -> list[ModelVersion]:
    """The versions the endpoint's desired release serves (shadows included)."""
    release = endpoint.desired_release
    if release is None or release.is_stop:
        return []
    ids = [int(v["version_id"]) for v in release.variants or [] if v.get("version_id")]
    return list(ModelVersion.objects.filter(pk__in=ids).select_related("model"))


def drift_compute_all(*, now: datetime | None = None) -> int:
    """A drift report for every serving version with a profile on every live endpoint."""
    count = 0
    endpoints = Endpoint.objects.filter(status__in=DRIFT_STATUSES).select_related(
        "team", "desired_release"
    )
    for endpoint in endpoints:
        for version in serving_versions(endpoint):
            if drift_report_create(endpoint=endpoint, version=version, now=now) is not None:
                count += 1
    return count
