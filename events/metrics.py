"""Counters of the events app, exposed on the dashboard's /metrics with everything else."""

from prometheus_client import Counter

WEBHOOK_DELIVERIES = Counter(
    "modeldeck_webhook_delivery_attempts", "Webhook delivery attempts by outcome.", ["outcome"]
)
