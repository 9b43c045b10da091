"""Writes for monitoring: rollup upkeep, drift reports, alert rules and alerts, webhooks."""

from __future__ import annotations

import json
import logging
import secrets
import time
from datetime import datetime, timedelta
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.db.models import F, Min, Q
from django.utils import timezone

from accounts.actor import Actor
from accounts.models import Role, Team
from accounts.permissions import require_role
from accounts.services import audit_record
from common.errors import ApplicationError
from deployments.models import Endpoint, EndpointStatus
from monitoring import drift, histograms, webhooks
from monitoring.conf import setting
from monitoring.exposition import Contribution
from monitoring.models import (
    Alert,
    AlertMetric,
    AlertRule,
    AlertStatus,
    Comparator,
    Component,
    DeliveryStatus,
    DriftReport,
    DriftVerdict,
    MetricHour,
    MetricPoint,
    ScrapeState,
    Webhook,
    WebhookDelivery,
    WebhookEvent,
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
    deliveries, _ = (
        WebhookDelivery.objects.filter(created_at__lt=now - timedelta(days=30))
        .exclude(status=DeliveryStatus.PENDING)
        .delete()
    )
    return {"minutes": minutes, "hours": hours, "scrape_states": states, "deliveries": deliveries}


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
            webhook_emit(
                team=endpoint.team,
                event=WebhookEvent.DRIFT_DETECTED,
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
    webhook_emit(
        team=rule.endpoint.team,
        event=WebhookEvent.ALERT_OPENED,
        payload=_alert_payload(alert, rule),
    )
    return alert


def _alert_resolve(rule: AlertRule, alert: Alert, value: float | None, now: datetime) -> None:
    resolved = Alert.objects.filter(pk=alert.pk, status=AlertStatus.OPEN).update(
        status=AlertStatus.RESOLVED, resolved_at=now, last_value=value
    )
    if resolved:
        alert.refresh_from_db()
        webhook_emit(
            team=rule.endpoint.team,
            event=WebhookEvent.ALERT_RESOLVED,
            payload=_alert_payload(alert, rule),
        )


def alerts_evaluate_all(*, now: datetime | None = None) -> int:
    """Evaluate every enabled rule; returns how many alerts are open afterwards."""
    now = now or timezone.now()
    for rule in AlertRule.objects.filter(is_enabled=True).select_related("endpoint"):
        alert_rule_evaluate(rule=rule, now=now)
    return Alert.objects.filter(status=AlertStatus.OPEN).count()


# --- webhooks --------------------------------------------------------------------------------


def _check_events(events: list[str]) -> list[str]:
    unknown = sorted(set(events) - set(WebhookEvent.values))
    if unknown:
        raise ApplicationError(f"Unknown events: {', '.join(unknown)}.", {"events": unknown})
    if not events:
        raise ApplicationError("Subscribe to at least one event.", {"events": []})
    return sorted(set(events))


@transaction.atomic
def webhook_create(*, actor: Actor, team: Team, name: str, url: str, events: list[str]) -> Webhook:
    """Register a team's webhook (deployers and admins). Internal hosts stay blocked until an
    installation admin allows them."""
    require_role(actor, team.pk, Role.DEPLOYER)
    name = name.strip()
    if not name or len(name) > 100:
        raise ApplicationError("A webhook name is 1 to 100 characters.", {"name": []})
    try:
        webhooks.split_url(url)
    except webhooks.UnsafeDestination as error:
        raise ApplicationError(f"URL: {error}.", {"url": [str(error)]}) from None
    webhook = Webhook.objects.create(
        team=team,
        name=name,
        url=url,
        events=_check_events(events),
        created_by=actor.user,
        secret_salt=secrets.token_hex(16),
    )
    audit_record(
        actor=actor,
        action="webhook.create",
        target=webhook,
        team=team,
        data={"url": url, "events": webhook.events},
    )
    return webhook


@transaction.atomic
def webhook_delete(*, actor: Actor, webhook: Webhook) -> None:
    """Remove a webhook and its delivery log (deployers and admins)."""
    require_role(actor, webhook.team_id, Role.DEPLOYER)
    audit_record(
        actor=actor,
        action="webhook.delete",
        target=webhook,
        team=webhook.team_id,
        data={"url": webhook.url},
    )
    webhook.delete()


@transaction.atomic
def webhook_rotate_secret(*, actor: Actor, webhook: Webhook) -> Webhook:
    """Give a webhook a new signing secret (deployers and admins)."""
    require_role(actor, webhook.team_id, Role.DEPLOYER)
    Webhook.objects.filter(pk=webhook.pk).update(secret_salt=secrets.token_hex(16))
    audit_record(actor=actor, action="webhook.rotate_secret", target=webhook, team=webhook.team_id)
    webhook.refresh_from_db()
    return webhook


@transaction.atomic
def webhook_allow_host(*, actor: Actor, webhook: Webhook, allow: bool) -> Webhook:
    """Let a webhook's host resolve to internal addresses, or take that back.

    Only installation admins (staff) may: it opens a path from the server into the internal
    network, which a team role must not be able to grant itself.
    """
    user = actor.user
    if user is None or not (user.is_active and user.is_staff):
        from django.core.exceptions import PermissionDenied

        raise PermissionDenied("Only installation admins can allow internal hosts.")
    host = webhooks.split_url(webhook.url)[1] if allow else ""
    Webhook.objects.filter(pk=webhook.pk).update(
        allowed_host=host, allowed_by=user if allow else None
    )
    audit_record(
        actor=actor,
        action="webhook.allow_host" if allow else "webhook.disallow_host",
        target=webhook,
        team=webhook.team_id,
        data={"host": host},
    )
    webhook.refresh_from_db()
    return webhook


def _json_ready(payload: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(payload, cls=DjangoJSONEncoder))


def webhook_emit(*, team: Team | int, event: str, payload: dict[str, Any]) -> list[WebhookDelivery]:
    """Queue `event` for every active webhook of `team` subscribed to it.

    Call it inside the transaction of the change it reports: the deliveries are written with it
    and sent after commit (and retried with backoff until they land).
    """
    if event not in WebhookEvent.values:
        raise ValueError(f"unknown webhook event {event!r}")
    team_id = team.pk if isinstance(team, Team) else team
    data = _json_ready(payload)
    deliveries = [
        WebhookDelivery.objects.create(webhook=webhook, event=event, payload=data)
        for webhook in Webhook.objects.filter(team_id=team_id, is_active=True)
        if event in webhook.events or event == WebhookEvent.PING
    ]
    if deliveries:
        ids = [delivery.pk for delivery in deliveries]
        transaction.on_commit(lambda: _enqueue_deliveries(ids))
    return deliveries


def _enqueue_deliveries(ids: list[int]) -> None:
    from monitoring.tasks import deliver_webhook

    for delivery_id in ids:
        try:
            deliver_webhook.delay(delivery_id)
        except Exception:  # the broker is down: the periodic retry task will send it
            logger.warning("could not enqueue webhook delivery %s", delivery_id, exc_info=True)


@transaction.atomic
def webhook_ping(*, actor: Actor, webhook: Webhook) -> WebhookDelivery:
    """Send a test event to one webhook (deployers and admins)."""
    require_role(actor, webhook.team_id, Role.DEPLOYER)
    delivery = WebhookDelivery.objects.create(
        webhook=webhook,
        event=WebhookEvent.PING,
        payload={"message": "Modeldeck test event", "by": actor.label},
    )
    audit_record(actor=actor, action="webhook.ping", target=webhook, team=webhook.team_id)
    transaction.on_commit(lambda: _enqueue_deliveries([delivery.pk]))
    return delivery


def delivery_body(delivery: WebhookDelivery) -> bytes:
    """The exact JSON document sent (the same on every attempt)."""
    document = {
        "id": str(delivery.delivery_id),
        "event": delivery.event,
        "created_at": delivery.created_at,
        "team": delivery.webhook.team.name,
        "data": delivery.payload,
    }
    return json.dumps(document, cls=DjangoJSONEncoder, separators=(",", ":")).encode()


def retry_delay(attempts: int) -> timedelta:
    """Exponential backoff after the n-th failed attempt: base, 2×base, 4×base, … capped."""
    base = float(setting("WEBHOOK_RETRY_BASE_SECONDS"))
    return timedelta(
        seconds=min(base * 2 ** max(attempts - 1, 0), float(setting("WEBHOOK_RETRY_MAX_SECONDS")))
    )


def delivery_attempt(*, delivery_id: int, now: datetime | None = None) -> WebhookDelivery | None:
    """Try one pending, due delivery once; schedule the next try or give up.

    The attempt is claimed with a compare-and-set on the attempt count, so two workers never send
    the same attempt. Returns the delivery, or None when there was nothing to do.
    """
    from monitoring.metrics import WEBHOOK_DELIVERIES

    now = now or timezone.now()
    delivery = (
        WebhookDelivery.objects.filter(pk=delivery_id, status=DeliveryStatus.PENDING)
        .select_related("webhook__team")
        .first()
    )
    if delivery is None or (delivery.next_attempt_at and delivery.next_attempt_at > now):
        return None
    timeout = float(setting("WEBHOOK_TIMEOUT_SECONDS"))
    claimed = WebhookDelivery.objects.filter(
        pk=delivery.pk, status=DeliveryStatus.PENDING, attempts=delivery.attempts
    ).update(
        attempts=F("attempts") + 1,
        last_attempt_at=now,
        # While this attempt runs, nobody else picks it up.
        next_attempt_at=now + timedelta(seconds=timeout * 3 + 30),
    )
    if not claimed:
        return None
    attempts = delivery.attempts + 1
    webhook = delivery.webhook
    if not webhook.is_active:
        outcome = webhooks.Outcome(False, error="the webhook is paused", permanent=True)
    else:
        body = delivery_body(delivery)
        timestamp = str(int(time.time()))
        outcome = webhooks.post(
            url=webhook.url,
            allowed_host=webhook.allowed_host,
            body=body,
            headers={
                webhooks.SIGNATURE_HEADER: webhooks.sign(webhook.secret, timestamp, body),
                webhooks.TIMESTAMP_HEADER: timestamp,
                webhooks.EVENT_HEADER: delivery.event,
                webhooks.DELIVERY_HEADER: str(delivery.delivery_id),
            },
            timeout=timeout,
        )
    if outcome.delivered:
        fields = {
            "status": DeliveryStatus.SUCCEEDED,
            "delivered_at": timezone.now(),
            "next_attempt_at": None,
            "last_error": "",
        }
        WEBHOOK_DELIVERIES.labels(outcome="delivered").inc()
    elif outcome.permanent or attempts >= int(setting("WEBHOOK_MAX_ATTEMPTS")):
        fields = {
            "status": DeliveryStatus.FAILED,
            "next_attempt_at": None,
            "last_error": outcome.error[:1000],
        }
        WEBHOOK_DELIVERIES.labels(outcome="failed").inc()
    else:
        fields = {
            "next_attempt_at": now + retry_delay(attempts),
            "last_error": outcome.error[:1000],
        }
        WEBHOOK_DELIVERIES.labels(outcome="retry").inc()
    WebhookDelivery.objects.filter(pk=delivery.pk).update(response_status=outcome.status, **fields)
    delivery.refresh_from_db()
    return delivery


def deliveries_retry_due(*, now: datetime | None = None, limit: int = 100) -> int:
    """Attempt every pending delivery whose next try is due; returns how many were tried."""
    now = now or timezone.now()
    due = list(
        WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .order_by("next_attempt_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    tried = 0
    for delivery_id in due:
        if delivery_attempt(delivery_id=delivery_id, now=now) is not None:
            tried += 1
    return tried
