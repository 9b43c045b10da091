"""Delivery tasks of the events app. Each is safe to run twice: attempts are claimed by count."""

from celery import shared_task

from events import services


@shared_task(ignore_result=True)
def deliver_webhook(delivery_id: int) -> None:
    """Attempt one webhook delivery now (the retry task picks up later attempts)."""
    services.delivery_attempt(delivery_id=delivery_id)


@shared_task(ignore_result=True)
def retry_webhook_deliveries() -> None:
    """Attempt every webhook delivery whose backoff has run out."""
    services.deliveries_retry_due()


@shared_task(ignore_result=True)
def prune_events() -> None:
    """Delete finished deliveries and old events past their retention."""
    services.events_prune()
