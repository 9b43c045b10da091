"""Writes for monitoring: rollup upkeep, drift reports, alert rules and alerts."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Min, Q
from django.utils import timezone

from accounts.actor import Actor
from accounts.models import Role
from accounts.permissions import require_role
from accounts.services import audit_record
from common.errors import ApplicationError
from deployments.models import Endpoint, EndpointStatus
from events.models import EventKind
from events.services import event_record
from monitoring import drift, histograms
from monitoring.conf import setting
from monitoring.exposition import Contribution
from monitoring.models import (
    Alert,
    AlertMetric,
    AlertRule,
    AlertStatus,
    Comparator,
    Component,
    DriftReport,
    DriftVerdict,
    MetricHour,
    MetricPoint,
    ScrapeState,
)
from registry.models import ModelVersion

logger = logging.getLogger(__name__)

ROLLUP_SUM_FIELDS = (*Contribution.COUNTERS, *Contribution.FLOATS)
DRIFT_STATUSES = (EndpointStatus.LIVE, EndpointStatus.DEGRADED)


# --- rollup upkeep ---------------------------------------------------------------------------


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
    start = max(start, now - timedelta(days=setting("METRICS_MINUTE_RETENTION_DAYS")))
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
        minute__lt=now - timedelta(days=setting("METRICS_MINUTE_RETENTION_DAYS"))
    ).delete()
    hours, _ = MetricHour.objects.filter(
        hour__lt=now - timedelta(days=setting("METRICS_HOUR_RETENTION_DAYS"))
    ).delete()
    # A target unseen for the minute retention is gone (its server was replaced); forgetting it
    # sooner could count a still-running process's totals twice if it answered again. States
    # that never succeeded hold no counter values, so they can go at once.
    forgotten = now - timedelta(days=setting("METRICS_MINUTE_RETENTION_DAYS"))
    states, _ = ScrapeState.objects.filter(
        Q(fetched_at__lt=forgotten) | Q(fetched_at__isnull=True)
    ).delete()
    return {"minutes": minutes, "hours": hours, "scrape_states": states}


# --- drift -----------------------------------------------------------------------------------


def _thresholds() -> drift.Thresholds:
    return drift.Thresholds(
        psi=float(setting("DRIFT_PSI_THRESHOLD")),
        js_distance=float(setting("DRIFT_JS_THRESHOLD")),
        dataset_share=float(setting("DRIFT_DATASET_SHARE")),
        min_rows=int(setting("DRIFT_MIN_ROWS")),
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
    start = end - timedelta(minutes=int(setting("DRIFT_WINDOW_MINUTES")))
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


# --- alert rules and alerts ------------------------------------------------------------------


def _check_rule_values(
    *, metric: str, comparator: str, threshold: float, window_minutes: int, for_minutes: int
) -> None:
    if metric not in AlertMetric.values:
        raise ApplicationError("Unknown metric.", {"metric": [f"Use one of {AlertMetric.values}."]})
    if comparator not in Comparator.values:
        raise ApplicationError("Unknown comparator.", {"comparator": ["Use gt or lt."]})
    if not 1 <= window_minutes <= 1440:
        raise ApplicationError("The window is 1 to 1440 minutes.", {"window_minutes": []})
    if not 0 <= for_minutes <= 1440:
        raise ApplicationError("'For' is 0 to 1440 minutes.", {"for_minutes": []})
    if threshold < 0 or (metric != AlertMetric.LATENCY_P95 and threshold > 1):
        raise ApplicationError(
            "Rates and shares are between 0 and 1; latency is in seconds.", {"threshold": []}
        )


@transaction.atomic
def alert_rule_create(
    *,
    actor: Actor,
    endpoint: Endpoint,
    name: str,
    metric: str,
    comparator: str = "gt",
    threshold: float,
    window_minutes: int = 5,
    for_minutes: int = 0,
) -> AlertRule:
    """Add an alert rule to an endpoint (deployers and admins)."""
    require_role(actor, endpoint.team_id, Role.DEPLOYER)
    name = name.strip()
    if not name or len(name) > 100:
        raise ApplicationError("A rule name is 1 to 100 characters.", {"name": []})
    _check_rule_values(
        metric=metric,
        comparator=comparator,
        threshold=threshold,
        window_minutes=window_minutes,
        for_minutes=for_minutes,
    )
    rule = AlertRule.objects.create(
        endpoint=endpoint,
        name=name,
        metric=metric,
        comparator=comparator,
        threshold=threshold,
        window_minutes=window_minutes,
        for_minutes=for_minutes,
        created_by=actor.user,
    )
    audit_record(
        actor=actor,
        action="alert_rule.create",
        target=rule,
        team=endpoint.team_id,
        data={
            "endpoint": endpoint.name,
            "metric": metric,
            "comparator": comparator,
            "threshold": threshold,
            "window_minutes": window_minutes,
            "for_minutes": for_minutes,
        },
    )
    return rule


@transaction.atomic
def alert_rule_delete(*, actor: Actor, rule: AlertRule) -> None:
    """Remove a rule and its alerts (deployers and admins)."""
    team_id = rule.endpoint.team_id
    require_role(actor, team_id, Role.DEPLOYER)
    audit_record(
        actor=actor,
        action="alert_rule.delete",
        target=rule,
        team=team_id,
        data={"endpoint": rule.endpoint.name},
    )
    rule.delete()


@transaction.atomic
def alert_rule_set_enabled(*, actor: Actor, rule: AlertRule, enabled: bool) -> AlertRule:
    """Pause or resume a rule; pausing resolves its open alert."""
    require_role(actor, rule.endpoint.team_id, Role.DEPLOYER)
    AlertRule.objects.filter(pk=rule.pk).update(
        is_enabled=enabled, breaching_since=None, clear_since=None
    )
    if not enabled:
        Alert.objects.filter(rule=rule, status=AlertStatus.OPEN).update(
            status=AlertStatus.RESOLVED, resolved_at=timezone.now()
        )
    audit_record(
        actor=actor,
        action="alert_rule.enable" if enabled else "alert_rule.disable",
        target=rule,
        team=rule.endpoint.team_id,
    )
    rule.refresh_from_db()
    return rule


def _window_rows(endpoint_id: int, start: datetime) -> list[dict]:
    rows = list(
        MetricPoint.objects.filter(endpoint_id=endpoint_id, minute__gte=start).values(
            "component", "requests", "server_errors", "latency"
        )
    )
    gateway = [row for row in rows if row["component"] == Component.GATEWAY]
    return gateway or rows


def rule_value(rule: AlertRule, *, now: datetime) -> float | None:
    """The rule's metric over its window (None when there is no data)."""
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=rule.window_minutes - 1)
    if rule.metric == AlertMetric.DRIFT:
        since = now - timedelta(minutes=max(rule.window_minutes, 60))
        shares = DriftReport.objects.filter(
            endpoint_id=rule.endpoint_id, created_at__gte=since
        ).exclude(verdict=DriftVerdict.INSUFFICIENT_DATA)
        latest: dict[int, float] = {}
        for version_id, share in shares.order_by("created_at", "id").values_list(
            "version_id", "drifting_share"
        ):
            latest[version_id] = share
        return max(latest.values()) if latest else None
    rows = _window_rows(rule.endpoint_id, start)
    requests = sum(row["requests"] for row in rows)
    if not requests:
        return None
    if rule.metric == AlertMetric.ERROR_RATE:
        return sum(row["server_errors"] for row in rows) / requests
    latency: dict = {}
    for row in rows:
        latency = histograms.merge(latency, row["latency"])
    return histograms.quantile(latency, 0.95)


def _alert_payload(alert: Alert, rule: AlertRule) -> dict:
    return {
        "alert_id": alert.pk,
        "endpoint": rule.endpoint.name,
        "rule": rule.name,
        "metric": rule.metric,
        "comparator": rule.comparator,
        "threshold": rule.threshold,
        "value": alert.last_value,
        "status": alert.status,
        "opened_at": alert.opened_at,
        "resolved_at": alert.resolved_at,
    }


def alert_rule_evaluate(*, rule: AlertRule, now: datetime | None = None) -> Alert | None:
    """Evaluate one rule: open an alert once the condition held for `for` minutes, resolve it once
    it has been clear as long. Returns the open alert, if any."""
    now = now or timezone.now()
    value = rule_value(rule, now=now)
    hold = timedelta(minutes=rule.for_minutes)
    with transaction.atomic():
        rule = (
            AlertRule.objects.select_for_update(of=("self",))
            .select_related("endpoint__team")
            .get(pk=rule.pk)
        )
        alert = Alert.objects.filter(rule=rule, status=AlertStatus.OPEN).first()
        breaching = rule.breaches(value)
        rule.last_value, rule.last_evaluated_at = value, now
        if breaching:
            rule.clear_since = None
            if alert is not None:
                worst = max if rule.comparator == Comparator.ABOVE else min
                peak = value if alert.peak_value is None else worst(alert.peak_value, value)
                Alert.objects.filter(pk=alert.pk).update(last_value=value, peak_value=peak)
            else:
                rule.breaching_since = rule.breaching_since or now
                if now - rule.breaching_since >= hold:
                    alert = _alert_open(rule, value, now)
        else:
            rule.breaching_since = None
            if alert is not None:
                rule.clear_since = rule.clear_since or now
                if now - rule.clear_since >= hold:
                    _alert_resolve(rule, alert, value, now)
                    alert, rule.clear_since = None, None
        rule.save(
            update_fields=[
                "last_value",
                "last_evaluated_at",
                "breaching_since",
                "clear_since",
                "updated_at",
            ]
        )
    return alert


def _alert_open(rule: AlertRule, value: float, now: datetime) -> Alert | None:
    message = (
        f"{rule.endpoint.name}: {rule.get_metric_display()} {value:.4g} "
        f"{rule.get_comparator_display()} {rule.threshold:g} for {rule.window_minutes} min"
    )
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                rule=rule,
                endpoint=rule.endpoint,
                opened_at=now,
                opening_value=value,
                peak_value=value,
                last_value=value,
                message=message[:500],
            )
    except IntegrityError:
        # Another evaluator opened it first; one open alert per rule.
        return Alert.objects.filter(rule=rule, status=AlertStatus.OPEN).first()
    event_record(
        team=rule.endpoint.team,
        kind=EventKind.ALERT_OPENED,
        payload=_alert_payload(alert, rule),
    )
    return alert


def _alert_resolve(rule: AlertRule, alert: Alert, value: float | None, now: datetime) -> None:
    resolved = Alert.objects.filter(pk=alert.pk, status=AlertStatus.OPEN).update(
        status=AlertStatus.RESOLVED, resolved_at=now, last_value=value
    )
    if resolved:
        alert.refresh_from_db()
        event_record(
            team=rule.endpoint.team,
            kind=EventKind.ALERT_RESOLVED,
            payload=_alert_payload(alert, rule),
        )


def alerts_evaluate_all(*, now: datetime | None = None) -> int:
    """Evaluate every enabled rule; returns how many alerts are open afterwards."""
    now = now or timezone.now()
    for rule in AlertRule.objects.filter(is_enabled=True).select_related("endpoint"):
        alert_rule_evaluate(rule=rule, now=now)
    return Alert.objects.filter(status=AlertStatus.OPEN).count()
