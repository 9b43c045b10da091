"""Celery tasks of the registry: validate uploaded versions, requeue lost validations."""

from __future__ import annotations

import logging
import tempfile
from datetime import timedelta
from pathlib import Path

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from accounts.actor import Actor
from registry import services, validation
from registry.models import Artifact, ModelVersion, VersionStatus
from registry.storage import materialize_version

logger = logging.getLogger(__name__)

# A pending version older than this has probably lost its task (broker outage, worker killed).
STALE_PENDING = timedelta(minutes=2)
REQUEUE_BATCH = 100


def _check_in_sandbox(version: ModelVersion) -> validation.Outcome:
    """Lay the version out as the runtime would (its own folder) and check it in a child."""
    with tempfile.TemporaryDirectory(prefix="modeldeck-validate-") as folder:
        root = Path(folder)
        try:
            path = materialize_version(version, root)
        except (OSError, Artifact.DoesNotExist) as error:
            return validation.Outcome(
                False, f"The stored model file cannot be read: {error}", {}, {"check": "storage"}
            )
        return validation.run_in_child(
            path,
            root=root,
            timeout_seconds=settings.VALIDATION_TIMEOUT_SECONDS,
            memory_bytes=settings.VALIDATION_MEMORY_BYTES,
        )


@shared_task(ignore_result=True)
def validate_version(version_id: int) -> None:
    """Validate one version in a sandboxed child process; safe to run twice."""
    version = ModelVersion.objects.select_related("model").filter(pk=version_id).first()
    if version is None or version.status != VersionStatus.PENDING:
        return
    actor = Actor.system("validation")
    if not services.version_mark_validating(actor=actor, version_id=version_id):
        return
    outcome = _check_in_sandbox(version)
    services.version_record_validation(
        actor=actor,
        version_id=version_id,
        ok=outcome.ok,
        reason=outcome.reason,
        signature=outcome.signature,
        report=outcome.report,
    )
    logger.info(
        "Validated %s: %s %s", version, "ready" if outcome.ok else "invalid", outcome.reason
    )


@shared_task(ignore_result=True)
def requeue_stale_validations() -> int:
    """Re-queue pending versions whose task was lost, and validations whose worker died."""
    now = timezone.now()
    actor = Actor.system("validation")
    pending = ModelVersion.objects.filter(
        status=VersionStatus.PENDING, updated_at__lt=now - STALE_PENDING
    ).values_list("pk", flat=True)[:REQUEUE_BATCH]
    count = 0
    for version_id in pending:
        validate_version.delay(version_id)
        count += 1
    # A child never outlives its timeout, so a validation older than that lost its worker.
    started_before = now - timedelta(seconds=settings.VALIDATION_TIMEOUT_SECONDS + 300)
    stuck = ModelVersion.objects.filter(
        status=VersionStatus.VALIDATING, validation_started_at__lt=started_before
    ).values_list("pk", flat=True)[:REQUEUE_BATCH]
    for version_id in stuck:
        count += services.version_requeue_stale(
            actor=actor, version_id=version_id, started_before=started_before
        )
    return count
