"""Reads for events, always scoped to the caller's teams."""

from django.db.models import QuerySet
from django.http import Http404

from accounts.actor import Actor
from events.models import Webhook, WebhookDelivery


def webhooks_for_actor(*, actor: Actor) -> QuerySet[Webhook]:
    """Webhooks of the actor's teams."""
    return Webhook.objects.filter(team_id__in=actor.team_ids).select_related("team")


def webhook_for_actor(*, actor: Actor, pk: int) -> Webhook:
    """One webhook of the actor's teams; 404 for anything else."""
    webhook = webhooks_for_actor(actor=actor).filter(pk=pk).first()
    if webhook is None:
        raise Http404("No such webhook.")
    return webhook


def deliveries_for_webhook(*, webhook: Webhook, limit: int = 50) -> list[WebhookDelivery]:
    """The newest deliveries of a webhook."""
    return list(
        WebhookDelivery.objects.filter(webhook=webhook).order_by("-created_at", "-id")[:limit]
    )
