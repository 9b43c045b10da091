"""Monitoring settings with their defaults, read at call time so that tests can override them.

Every name here belongs in `config/settings/base.py` (env-driven) and `.env.example`; until it is
there, the default below applies.
"""

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # How often beat scrapes every live endpoint; pages poll at the same pace.
    "METRICS_SCRAPE_INTERVAL_SECONDS": 5.0,
    # Per /metrics fetch; a hung runtime must not stall the scrape of the other endpoints.
    "METRICS_SCRAPE_TIMEOUT_SECONDS": 2.0,
    # A larger exposition is refused (a runtime gone wrong must not exhaust the worker).
    "METRICS_MAX_EXPOSITION_BYTES": 8 * 1024 * 1024,
    "METRICS_MINUTE_RETENTION_DAYS": 7,
    "METRICS_HOUR_RETENTION_DAYS": 90,
    # Bearer token Prometheus presents to the dashboard's own /metrics; empty = staff only.
    "METRICS_TOKEN": "",
    "DRIFT_WINDOW_MINUTES": 60,
    "DRIFT_PSI_THRESHOLD": 0.2,
    "DRIFT_JS_THRESHOLD": 0.1,
    "DRIFT_DATASET_SHARE": 0.3,
    "DRIFT_MIN_ROWS": 100,
    "WEBHOOK_TIMEOUT_SECONDS": 5.0,
    "WEBHOOK_MAX_ATTEMPTS": 8,
    "WEBHOOK_RETRY_BASE_SECONDS": 30,
    "WEBHOOK_RETRY_MAX_SECONDS": 3600,
    # Prediction records and feedback older than this are deleted.
    "PREDICTION_LOG_RETENTION_DAYS": 30,
}


def setting(name: str) -> Any:
    """The project setting `name`, or the monitoring default."""
    return getattr(settings, name, DEFAULTS[name])
