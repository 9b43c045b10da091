"""The outbox of domain events and the sinks that deliver them (webhooks today).

Domain apps (registry, deployments, monitoring) record an `Event` in the transaction of the change
it reports; the sinks fan it out in the same transaction (one `WebhookDelivery` per subscribed
webhook) and deliver after commit, retrying until the receiver has it. So an event exists exactly
when its change committed, and no domain app needs to know who listens.
"""

import hashlib
import hmac
import secrets
import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from accounts.models import Team
from common.models import TimeStampedModel


class EventKind(models.TextChoices):
    """What happened; webhooks subscribe to kinds."""

    VERSION_READY = "version.ready", "A model version is ready"
    ALIAS_MOVED = "alias.moved", "An alias moved"
    RELEASE_LIVE = "release.live", "A release went live"
    ROLLBACK = "endpoint.rollback", "An endpoint rolled back"
    ALERT_OPENED = "alert.opened", "An alert opened"
    ALERT_RESOLVED = "alert.resolved", "An alert resolved"
    DRIFT_DETECTED = "drift.detected", "Drift detected"
    EXPERIMENT_ENDED = "experiment.ended", "An experiment ended before its verdict"
    PING = "ping", "Test ping"


class Event(models.Model):
    """One domain event of a team, written in the transaction of the change it reports."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=32, choices=EventKind.choices)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["team", "-created_at"], name="event_team_recent")]

    def __str__(self) -> str:
        return f"{self.kind} of team {self.team_id}"


def new_secret_salt() -> str:
    """A fresh random salt for a webhook's signing secret."""
    return secrets.token_hex(16)


class Webhook(TimeStampedModel):
    """An HTTPS (or HTTP) URL of a team that receives signed JSON events.

    The signing secret is derived from SECRET_KEY and a per-webhook salt, so a database dump alone
    does not reveal it; rotating replaces the salt.
    """

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="webhooks")
    name = models.CharField(max_length=100)
    url = models.URLField(max_length=2000)
    events = models.JSONField(default=list)
    is_active = models.BooleanField(default=True)
    secret_salt = models.CharField(max_length=64, default=new_secret_salt, editable=False)
    # A host name an installation admin allowed to resolve to internal addresses (an on-premise
    # receiver); empty = only public addresses are ever contacted.
    allowed_host = models.CharField(max_length=255, blank=True)
    allowed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["team_id", "name"]

    def __str__(self) -> str:
        return self.name

    @property
    def secret(self) -> str:
        """The HMAC-SHA256 signing secret receivers verify with."""
        message = f"modeldeck-webhook:{self.pk}:{self.secret_salt}".encode()
        return hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).hexdigest()


class DeliveryStatus(models.TextChoices):
    """Pending until delivered, or failed for good after the last attempt."""

    PENDING = "pending", "Pending"
    SUCCEEDED = "succeeded", "Delivered"
    FAILED = "failed", "Failed"


class WebhookDelivery(models.Model):
    """One event for one webhook, retried with exponential backoff until it lands or gives up."""

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    # The outbox row it delivers; empty for test pings and deliveries older than the outbox.
    source = models.ForeignKey(
        Event, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries"
    )
    delivery_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    event = models.CharField(max_length=32)
    payload = models.JSONField(default=dict)
    status = models.CharField(
        max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=1000, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "webhook deliveries"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="webhook_delivery_due"),
            models.Index(fields=["webhook", "-created_at"], name="webhook_delivery_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.event} to {self.webhook_id} ({self.status})"
