"""Deployment tasks: converge endpoints. Both are safe to run twice and at any time."""

import logging
from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from deployments import hooks, reconciler, selectors
from deployments.models import Target
from deployments.services import endpoint_advance_rollout

logger = logging.getLogger(__name__)

# A failed endpoint is retried by beat at most this often (a new release retries at once).
FAILED_RETRY_SECONDS = 60


@shared_task(ignore_result=True)
def reconcile_endpoint(endpoint_id: int) -> str:
    """Make what runs for one endpoint match its desired release."""
    return reconciler.reconcile_endpoint(endpoint_id=endpoint_id)


@shared_task(ignore_result=True)
def reconcile_all() -> int:
    """Beat: advance baked canaries, remove orphans, and re-converge every endpoint."""
    rolling_out = selectors.endpoint_ids_rolling_out()
    # Canary steps are gated (monitoring registers its rollback policies): judge each rolling-out
    # endpoint now (a breach rolls back here) so that a step never waits a minute for its verdict.
    hooks.rollout_review(endpoint_ids=rolling_out)
    for endpoint_id in rolling_out:
        endpoint_advance_rollout(endpoint_id=endpoint_id)
    for target in Target.objects.filter(endpoints__isnull=False).distinct():
        try:
            reconciler.sweep_target(target=target)
        except Exception:  # one broken target must not stop the others from converging
            logger.exception("orphan sweep of target %s failed", target)
    retry_before = timezone.now() - timedelta(seconds=FAILED_RETRY_SECONDS)
    endpoint_ids = selectors.endpoint_ids_to_reconcile(failed_retry_before=retry_before)
    for endpoint_id in endpoint_ids:
        reconcile_endpoint.delay(endpoint_id)
    return len(endpoint_ids)


@shared_task(ignore_result=True)
def gateway_restart(endpoint_id: int) -> str:
    """Restart an endpoint's gateway after its admin token was rotated."""
    from deployments.access import gateway_restart as restart

    return restart(endpoint_id=endpoint_id)
