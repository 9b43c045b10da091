"""Deployment tasks: converge endpoints and build images. Each is safe to run twice, at any time."""

import logging
from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from deployments import images, reconciler
from deployments.edge.tasks import advance_edge_rollouts  # noqa: F401 (registers the task)
from deployments.models import Endpoint, EndpointStatus, Target, TargetKind
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
    from monitoring.guardrails import rollback_policies_evaluate_all

    rolling_out = _rollout_candidates()
    # Canary steps are gated by the endpoint's rollback policy: judge each rolling-out endpoint
    # now (a breach rolls back here) so that a step never waits a whole minute for its verdict.
    rollback_policies_evaluate_all(endpoint_ids=rolling_out)
    for endpoint_id in rolling_out:
        endpoint_advance_rollout(endpoint_id=endpoint_id)
    for target in Target.objects.filter(endpoints__isnull=False).distinct():
        try:
            reconciler.sweep_target(target=target)
        except Exception:  # one broken target must not stop the others from converging
            logger.exception("orphan sweep of target %s failed", target)
    retry_before = timezone.now() - timedelta(seconds=FAILED_RETRY_SECONDS)
    endpoints = Endpoint.objects.filter(desired_release__isnull=False).exclude(
        status=EndpointStatus.FAILED, last_reconciled_at__gt=retry_before
    )
    count = 0
    for endpoint_id in endpoints.values_list("pk", flat=True):
        reconcile_endpoint.delay(endpoint_id)
        count += 1
    return count


@shared_task(ignore_result=True)
def build_version_image(build_id: int) -> None:
    """Build one pending serving image; a redelivered task finds the build claimed and returns."""
    images.build_version_image(build_id)


def stop_everything() -> int:
    """Stop every serving process the local targets started (used by `stop` of a dev stack and
    the end-to-end tests); endpoints keep their desired release, so the next reconcile restarts
    them. Returns how many resources were stopped."""
    from deployments.targets import driver_for

    stopped = 0
    for target in Target.objects.filter(kind=TargetKind.LOCAL):
        driver = driver_for(target)
        for resource in driver.list_owned():
            driver.remove_owned(resource=resource)
            stopped += 1
    return stopped


def _rollout_candidates() -> list[int]:
    """Live endpoints whose release still has canary steps to run."""
    live = Endpoint.objects.filter(status=EndpointStatus.LIVE).select_related("desired_release")
    return [
        endpoint.pk
        for endpoint in live
        if endpoint.desired_release is not None and len(endpoint.desired_release.strategy) > 1
    ]
