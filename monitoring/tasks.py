"""Periodic monitoring jobs (scheduled in CELERY_BEAT_SCHEDULE).

Every task is safe to run twice or concurrently: scrapes are fenced by their fetch time, rollups
are recomputed, alerts are compare-and-set.
"""

import logging

from celery import shared_task

from monitoring import scraper, services

logger = logging.getLogger(__name__)


@shared_task(ignore_result=True)
def scrape_all() -> None:
    """Scrape the runtime /metrics of every endpoint that may serve traffic."""
    results = scraper.scrape_all()
    failed = {name: result.failed for name, result in results.items() if result.failed}
    if failed:
        logger.info("scrape failures per endpoint: %s", failed)


@shared_task(ignore_result=True)
def rollup_metrics() -> None:
    """Roll complete hours up into hourly rows, then drop rows past their retention."""
    services.metrics_rollup_hours()
    services.metrics_prune()


@shared_task(ignore_result=True)
def compute_drift_all() -> None:
    """A drift report for every serving version with a reference profile."""
    services.drift_compute_all()


@shared_task(ignore_result=True)
def evaluate_alerts() -> None:
    """Open and resolve alerts from every enabled rule."""
    services.alerts_evaluate_all()


@shared_task(ignore_result=True)
def evaluate_rollback_policies() -> None:
    """Evaluate every enabled rollback policy; breaches roll back and converge inline."""
    services.rollback_policies_evaluate_all()


@shared_task(ignore_result=True)
def evaluate_experiments() -> None:
    """One sequential look at every running experiment."""
    services.experiments_evaluate_all()


@shared_task(ignore_result=True)
def prune_prediction_log() -> None:
    """Delete prediction records and feedback past their retention."""
    services.prediction_records_prune()
