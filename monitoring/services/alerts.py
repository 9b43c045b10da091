"""Alert rules and the alerts they open and resolve."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.actor import Actor
from accounts.models import Role
from accounts.permissions import require_role
from accounts.services import audit_record
from common.errors import ApplicationError
from deployments.models import Endpoint
from events.models import EventKind
from events.services import event_record
from monitoring import histograms
from monitoring.models import (
    Alert,
    AlertMetric,
    AlertRule,
    AlertStatus,
    Comparator,
    Component,
    DriftReport,
    DriftVerdict,
    MetricPoint,
)


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
