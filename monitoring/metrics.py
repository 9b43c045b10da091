"""The dashboard's own Prometheus metrics: web requests, scrapes, reconciles, webhooks, queues.

Counters and histograms live in the process that records them (web or worker). With
PROMETHEUS_MULTIPROC_DIR set to a folder shared by web and worker processes, /metrics adds them
up across processes; without it, /metrics shows the web process's own, and the database-derived
gauges below (last scrape per target, reconcile times, queue depth, alerts) cover the worker.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from django.conf import settings
from django.db.models import Count
from django.utils import timezone
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

logger = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

WEB_REQUESTS = Counter(
    "modeldeck_web_requests", "Requests answered by the dashboard.", ["method", "view", "status"]
)
WEB_REQUEST_DURATION = Histogram(
    "modeldeck_web_request_duration_seconds", "Time the dashboard took to answer.", ["method"]
)
SCRAPE_DURATION = Histogram(
    "modeldeck_scrape_duration_seconds",
    "Time to scrape every runtime target of one endpoint.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
RECONCILE_DURATION = Histogram(
    "modeldeck_reconcile_duration_seconds",
    "Time one reconcile run of one endpoint took.",
    ["outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
)


def record_reconcile(seconds: float, *, outcome: str = "converged") -> None:
    """For the reconciler: how long one run took and how it ended."""
    RECONCILE_DURATION.labels(outcome=outcome).observe(seconds)


def queue_depths() -> dict[str, int]:
    """Messages waiting per Celery queue, where the broker lets us count them."""
    url = settings.CELERY_BROKER_URL
    try:
        if url.startswith(("redis://", "rediss://")):
            import redis

            client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
            try:
                return {"celery": int(client.llen("celery"))}
            finally:
                client.close()
        if url == "filesystem://":
            folder = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("data_folder_in", ""))
            depths: dict[str, int] = {}
            # kombu names messages "<time>_<id>.<queue>.msg".
            for path in folder.glob("*.msg"):
                queue = path.name.rsplit(".", 2)[-2] if path.name.count(".") >= 2 else "celery"
                depths[queue] = depths.get(queue, 0) + 1
            return depths
    except Exception:  # a broker outage must not break the metrics page
        logger.warning("cannot measure the Celery queue depth", exc_info=True)
    return {}


class DatabaseCollector:
    """Gauges read from the database on every scrape of /metrics."""

    def collect(self):
        from deployments.models import Endpoint
        from events.models import WebhookDelivery
        from monitoring.models import Alert, ScrapeState

        now = timezone.now().timestamp()
        endpoints = GaugeMetricFamily(
            "modeldeck_endpoints", "Endpoints by status.", labels=["status"]
        )
        for row in Endpoint.objects.values("status").annotate(count=Count("id")):
            endpoints.add_metric([row["status"]], row["count"])
        yield endpoints

        reconciled = GaugeMetricFamily(
            "modeldeck_reconcile_age_seconds",
            "Seconds since each endpoint was last reconciled.",
            labels=["endpoint"],
        )
        for name, moment in Endpoint.objects.exclude(last_reconciled_at=None).values_list(
            "name", "last_reconciled_at"
        ):
            reconciled.add_metric([name], now - moment.timestamp())
        yield reconciled

        duration = GaugeMetricFamily(
            "modeldeck_scrape_last_duration_seconds",
            "How long the last successful scrape of a runtime target took.",
            labels=["endpoint", "component", "target"],
        )
        age = GaugeMetricFamily(
            "modeldeck_scrape_age_seconds",
            "Seconds since a runtime target was last scraped successfully.",
            labels=["endpoint", "component", "target"],
        )
        failures = GaugeMetricFamily(
            "modeldeck_scrape_consecutive_failures",
            "Failed scrapes of a runtime target since its last success.",
            labels=["endpoint", "component", "target"],
        )
        states = ScrapeState.objects.values_list(
            "endpoint__name", "component", "url", "duration_seconds", "scraped_at", "failures"
        )
        for endpoint, component, url, seconds, scraped_at, failed in states:
            labels = [endpoint, component, url]
            if seconds is not None:
                duration.add_metric(labels, seconds)
            if scraped_at is not None:
                age.add_metric(labels, now - scraped_at.timestamp())
            failures.add_metric(labels, failed)
        yield from (duration, age, failures)

        alerts = GaugeMetricFamily("modeldeck_open_alerts", "Alerts currently open.")
        alerts.add_metric([], Alert.objects.filter(status="open").count())
        yield alerts

        deliveries = GaugeMetricFamily(
            "modeldeck_webhook_deliveries", "Webhook deliveries by status.", labels=["status"]
        )
        for row in WebhookDelivery.objects.values("status").annotate(count=Count("id")):
            deliveries.add_metric([row["status"]], row["count"])
        yield deliveries

        queue = GaugeMetricFamily(
            "modeldeck_celery_queue_depth", "Tasks waiting in a Celery queue.", labels=["queue"]
        )
        for name, depth in queue_depths().items():
            queue.add_metric([name], depth)
        yield queue


def render() -> bytes:
    """The text exposition of the process (or all processes) and the database gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        own = generate_latest(registry)
    else:
        own = generate_latest(REGISTRY)
    database = CollectorRegistry(auto_describe=False)
    database.register(DatabaseCollector())
    return own + generate_latest(database)
