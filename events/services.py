"""Writes for events: recording domain events (the outbox), webhooks and their deliveries.

Domain services call `event_record` inside their own transaction. The event row and one pending
delivery per subscribed webhook are written with the change; the deliveries are sent after commit
and retried with backoff by `deliveries_retry_due` until they land, so a rolled-back change never
notifies anyone and a committed one always does, even across a broker outage.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.actor import Actor
from accounts.models import Role, Team
from accounts.permissions import require_role
from accounts.services import audit_record
from common.errors import ApplicationError
from events import webhooks
from events.metrics import WEBHOOK_DELIVERIES
from events.models import DeliveryStatus, Event, EventKind, Webhook, WebhookDelivery

logger = logging.getLogger(__name__)

# Delivered and failed deliveries, and the events behind them, are kept this long.
RETENTION_DAYS = 30


# --- the outbox --------------------------------------------------------------------------------


def _json_ready(payload: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(payload, cls=DjangoJSONEncoder))


def event_record(*, team: Team | int, kind: str, payload: dict[str, Any]) -> Event:
    """Record that `kind` happened to `team`, in the caller's transaction.

    Every active webhook of the team subscribed to `kind` gets a pending delivery in the same
    transaction; the deliveries are sent after commit.
    """
    if kind not in EventKind.values or kind == EventKind.PING:
        raise ValueError(f"unknown event kind {kind!r}")
    team_id = team.pk if isinstance(team, Team) else team
    event = Event.objects.create(team_id=team_id, kind=kind, payload=_json_ready(payload))
    deliveries = [
        WebhookDelivery.objects.create(
            webhook=webhook, source=event, event=kind, payload=event.payload
        )
        for webhook in Webhook.objects.filter(team_id=team_id, is_active=True)
        if kind in webhook.events
    ]
    if deliveries:
        ids = [delivery.pk for delivery in deliveries]
        transaction.on_commit(lambda: _enqueue_deliveries(ids))
    return event


def _enqueue_deliveries(ids: list[int]) -> None:
    from events.tasks import deliver_webhook  # the tasks module imports this one

    for delivery_id in ids:
        try:
            deliver_webhook.delay(delivery_id)
        except Exception:  # the broker is down: the periodic retry task will send it
            logger.warning("could not enqueue webhook delivery %s", delivery_id, exc_info=True)


def events_prune(*, now: datetime | None = None) -> dict[str, int]:
    """Delete finished deliveries and events past the retention; pending ones stay."""
    before = (now or timezone.now()) - timedelta(days=RETENTION_DAYS)
    deliveries, _ = (
        WebhookDelivery.objects.filter(created_at__lt=before)
        .exclude(status=DeliveryStatus.PENDING)
        .delete()
    )
    events, _ = (
        Event.objects.filter(created_at__lt=before)
        .exclude(deliveries__status=DeliveryStatus.PENDING)
        .delete()
    )
    return {"deliveries": deliveries, "events": events}


# --- webhooks ----------------------------------------------------------------------------------


def _check_events(events: list[str]) -> list[str]:
    unknown = sorted(set(events) - set(EventKind.values))
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


@transaction.atomic
def webhook_ping(*, actor: Actor, webhook: Webhook) -> WebhookDelivery:
    """Send a test event to one webhook (deployers and admins)."""
    require_role(actor, webhook.team_id, Role.DEPLOYER)
    delivery = WebhookDelivery.objects.create(
        webhook=webhook,
        event=EventKind.PING,
        payload={"message": "Modeldeck test event", "by": actor.label},
    )
    audit_record(actor=actor, action="webhook.ping", target=webhook, team=webhook.team_id)
    transaction.on_commit(lambda: _enqueue_deliveries([delivery.pk]))
    return delivery


# --- delivery ----------------------------------------------------------------------------------


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
    base = float(settings.WEBHOOK_RETRY_BASE_SECONDS)
    return timedelta(
        seconds=min(base * 2 ** max(attempts - 1, 0), float(settings.WEBHOOK_RETRY_MAX_SECONDS))
    )


def delivery_attempt(*, delivery_id: int, now: datetime | None = None) -> WebhookDelivery | None:
    """Try one pending, due delivery once; schedule the next try or give up.

    The attempt is claimed with a compare-and-set on the attempt count, so two workers never send
    the same attempt. Returns the delivery, or None when there was nothing to do.
    """
    now = now or timezone.now()
    delivery = (
        WebhookDelivery.objects.filter(pk=delivery_id, status=DeliveryStatus.PENDING)
        .select_related("webhook__team")
        .first()
    )
    if delivery is None or (delivery.next_attempt_at and delivery.next_attempt_at > now):
        return None
    timeout = float(settings.WEBHOOK_TIMEOUT_SECONDS)
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
    elif outcome.permanent or attempts >= int(settings.WEBHOOK_MAX_ATTEMPTS):
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
