"""Writes for batch prediction jobs: create, cancel, and the worker's progress."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.actor import Actor
from accounts.models import Role
from accounts.permissions import require_role
from accounts.services import audit_record
from common.errors import ApplicationError
from common.redaction import without_server_paths
from common.validation import bounded_text, field_error
from registry.models import (
    JOB_ACTIVE,
    BatchJob,
    JobStatus,
    VersionStatus,
)
from registry.storage import artifact_storage
from registry.uploads import HashedUpload, UploadTooLarge, as_hashed_upload

logger = logging.getLogger(__name__)


def _enqueue(task_name: str, object_id: int) -> None:
    """After commit, queue a registry task by name; a lost message is re-queued by beat."""
    from registry import tasks

    def send() -> None:
        try:
            getattr(tasks, task_name).delay(object_id)
        except Exception as error:  # broker errors have no common type; the row stays pending
            logger.warning("Could not queue %s(%s): %s", task_name, object_id, error)

    transaction.on_commit(send)


def batch_job_create(
    *, actor: Actor, version_reference: str, file: UploadedFile, key_column: str = ""
) -> BatchJob:
    """Store an input file and queue a job that scores it with a ready version (scientist).

    The file's header is checked against the version's signature now, so a file that cannot
    fit is refused with nothing stored; bad rows are found (and reported) by the job.
    """
    from registry import batch, selectors

    version = selectors.version_resolve(actor=actor, reference=version_reference)
    require_role(actor, version.model.team_id, Role.SCIENTIST)
    if version.status != VersionStatus.READY:
        raise field_error(
            "version",
            f"Version {version.reference} is {version.status}; only ready versions score files.",
            status=409,
        )
    key_column = (key_column or "").strip()
    not_a_column = "The key column is a column name of the file's header."
    bounded_text(
        key_column,
        field="key_column",
        max_length=200,
        too_long=not_a_column,
        control_characters=not_a_column,
    )
    limit = settings.BATCH_MAX_INPUT_BYTES
    upload = as_hashed_upload(file, limit=limit)
    try:
        if upload.size > limit:
            raise UploadTooLarge(limit)
        path = Path(upload.temporary_file_path())
        parquet = batch.is_parquet(path) if upload.size >= 8 else False
        try:
            header = batch.read_header(path, parquet=parquet)
            plan = batch.plan_columns(header, version.signature, key_column)
        except batch.Refusal as refusal:
            raise field_error("file", refusal.message) from None
        input_format = "parquet" if parquet else "csv"
        key = f"batch/{version.model.team_id}/{uuid.uuid4().hex}.{input_format}"
        stored = _store_at(upload, key)
        try:
            with transaction.atomic():
                job = BatchJob.objects.create(
                    version=version,
                    created_by=actor.user,
                    input_key=stored,
                    input_name=upload.name or "",
                    input_format=input_format,
                    input_size=upload.size,
                    input_sha256=upload.sha256,
                    key_column=key_column,
                    report={"plan": plan.describe()},
                )
                audit_record(
                    actor=actor,
                    action="batch_job.create",
                    target=job,
                    team=version.model.team_id,
                    data={
                        "version": version.reference,
                        "size": upload.size,
                        "sha256": upload.sha256,
                        "format": input_format,
                    },
                )
                _enqueue("run_batch_job", job.pk)
        except BaseException:
            artifact_storage().delete(stored)
            raise
    finally:
        upload.close()
    return job


def _store_at(upload: HashedUpload, key: str) -> str:
    saved = artifact_storage().save(key, upload)
    if saved != key:  # the key is fresh; a backend renaming it would break the link
        artifact_storage().delete(saved)
        raise ApplicationError("The artifact storage renamed a new file; nothing was stored.")
    return saved


@transaction.atomic
def batch_job_cancel(*, actor: Actor, job: BatchJob) -> BatchJob:
    """Stop a pending or running job (scientist); the worker stops between chunks."""
    team_id = job.version.model.team_id
    require_role(actor, team_id, Role.SCIENTIST)
    updated = BatchJob.objects.filter(pk=job.pk, status__in=JOB_ACTIVE).update(
        status=JobStatus.CANCELLED,
        status_reason=f"Cancelled by {actor.label}."[:500],
        finished_at=timezone.now(),
        updated_at=timezone.now(),
    )
    job.refresh_from_db()
    if not updated:
        raise ApplicationError(
            f"Batch job {job.pk} has already {job.status}; there is nothing to cancel.",
            status=409,
        )
    audit_record(actor=actor, action="batch_job.cancel", target=job, team=team_id)
    return job


def batch_job_start(*, job_id: int, stale_before=None) -> int | None:
    """Compare-and-set pending → running (or take over a running job whose worker went
    silent before `stale_before`); returns the new attempt number, None when not ours."""
    now = timezone.now()
    claimable = BatchJob.objects.filter(pk=job_id, status=JobStatus.PENDING)
    if stale_before is not None:
        claimable = BatchJob.objects.filter(pk=job_id).filter(
            Q(status=JobStatus.PENDING) | Q(status=JobStatus.RUNNING, updated_at__lt=stale_before)
        )
    with transaction.atomic():
        job = claimable.select_for_update().first()
        if job is None:
            return None
        attempt = job.attempt + 1
        BatchJob.objects.filter(pk=job_id).update(
            status=JobStatus.RUNNING,
            attempt=attempt,
            started_at=now,
            rows_done=0,
            rows_failed=0,
            errors=[],
            throughput=None,
            updated_at=now,
        )
    return attempt


def batch_job_record_progress(*, job_id: int, attempt: int, **fields) -> bool:
    """Write a running job's progress; False when it is no longer ours (cancelled, taken over)."""
    allowed = {"rows_total", "rows_done", "rows_failed", "throughput", "errors", "report"}
    values = {key: value for key, value in fields.items() if key in allowed}
    return bool(
        BatchJob.objects.filter(pk=job_id, status=JobStatus.RUNNING, attempt=attempt).update(
            **values, updated_at=timezone.now()
        )
    )


def batch_job_finish(
    *,
    job_id: int,
    attempt: int,
    ok: bool,
    reason: str = "",
    result_path: Path | None = None,
    fields: dict | None = None,
) -> bool:
    """Compare-and-set running → succeeded (storing the result file) or failed, with one
    audit row; False (and nothing stored) when the job was cancelled or taken over."""
    job = BatchJob.objects.select_related("version__model").filter(pk=job_id).first()
    if job is None:
        return False
    values = {
        key: value
        for key, value in (fields or {}).items()
        if key in {"rows_total", "rows_done", "rows_failed", "throughput", "errors", "report"}
    }
    stored = None
    if ok and result_path is not None:
        key = f"batch/{job.version.model.team_id}/{uuid.uuid4().hex}-result.csv"
        upload = HashedUpload.from_path(result_path, name="result.csv")
        try:
            stored = _store_at(upload, key)
        finally:
            upload.close()
        values.update(result_key=stored, result_size=artifact_storage().size(stored))
    try:
        with transaction.atomic():
            updated = BatchJob.objects.filter(
                pk=job_id, status=JobStatus.RUNNING, attempt=attempt
            ).update(
                status=JobStatus.SUCCEEDED if ok else JobStatus.FAILED,
                status_reason=""
                if ok
                else without_server_paths(reason or "The batch job failed.")[:5_000],
                finished_at=timezone.now(),
                updated_at=timezone.now(),
                **values,
            )
            if updated:
                job.refresh_from_db()
                audit_record(
                    actor=Actor.system("batch"),
                    action=f"batch_job.{job.status}",
                    target=job,
                    team=job.version.model.team_id,
                    data={
                        "rows_done": job.rows_done,
                        "rows_failed": job.rows_failed,
                        "reason": job.status_reason[:500],
                    },
                )
    except BaseException:
        if stored:
            artifact_storage().delete(stored)
        raise
    if not updated and stored:
        artifact_storage().delete(stored)
    return bool(updated)
