"""Celery tasks of the registry: validate uploaded versions, requeue lost validations, run
batch prediction jobs and derive optimized versions."""

from __future__ import annotations

import logging
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from accounts.actor import Actor
from registry import batch, optimize, services, validation
from registry.models import (
    JOB_TERMINAL,
    Artifact,
    ArtifactKind,
    BatchJob,
    JobStatus,
    ModelVersion,
    Optimization,
    VersionStatus,
)
from registry.storage import artifact_storage, materialize_version

logger = logging.getLogger(__name__)

# A pending version older than this has probably lost its task (broker outage, worker killed).
STALE_PENDING = timedelta(minutes=2)
REQUEUE_BATCH = 100


def _check_in_sandbox(version: ModelVersion) -> validation.Outcome:
    """Lay the version out as the runtime would (its own folder) and check it in a child, with
    its reference CSV (outside that folder) for the smoke inference when it has one."""
    with (
        tempfile.TemporaryDirectory(prefix="modeldeck-validate-") as folder,
        tempfile.TemporaryDirectory(prefix="modeldeck-reference-") as reference_folder,
    ):
        root = Path(folder)
        try:
            path = materialize_version(version, root)
            reference = _reference_copy(version, Path(reference_folder) / "reference.csv")
        except (OSError, Artifact.DoesNotExist) as error:
            return validation.Outcome(
                False, f"The stored model file cannot be read: {error}", {}, {"check": "storage"}
            )
        return validation.run_in_child(
            path,
            root=root,
            timeout_seconds=settings.VALIDATION_TIMEOUT_SECONDS,
            memory_bytes=settings.VALIDATION_MEMORY_BYTES,
            reference=reference,
        )


def _reference_copy(version: ModelVersion, destination: Path) -> Path | None:
    """The version's reference CSV as a file on this machine, or None without one."""
    artifact = version.artifacts.filter(kind=ArtifactKind.REFERENCE).first()
    if artifact is None:
        return None
    return _local_copy(artifact.storage_key, destination)


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
        smoke_warning=outcome.smoke_warning,
        smoke_input=outcome.smoke_input,
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


def _local_copy(key: str, destination: Path) -> Path:
    """A stored file on this machine: its own path for local storage, else a copy."""
    storage = artifact_storage()
    try:
        return Path(storage.path(key))
    except NotImplementedError:
        with storage.open(key, "rb") as stream, open(destination, "wb") as out:
            shutil.copyfileobj(stream, out, length=1024 * 1024)
        return destination


@shared_task(ignore_result=True)
def run_batch_job(job_id: int) -> None:
    """Score a batch job's file in a child process, chunk by chunk; safe to run twice."""
    job = BatchJob.objects.select_related("version__model").filter(pk=job_id).first()
    if job is None or job.status in JOB_TERMINAL:
        return
    attempt = services.batch_job_start(
        job_id=job_id, stale_before=timezone.now() - settings.BATCH_STALE_AFTER
    )
    if attempt is None:
        return
    state = {"errors": [], "report": dict(job.report)}

    def on_event(event: dict) -> bool:
        kind = event.get("event")
        if kind == "plan":
            state["report"]["plan"] = {
                key: event[key] for key in ("key_column", "inputs", "ignored_columns", "format")
            }
            state["report"]["chunk_rows"] = event["chunk_rows"]
            return services.batch_job_record_progress(
                job_id=job_id,
                attempt=attempt,
                rows_total=event["rows_total"],
                report=state["report"],
            )
        if kind == "chunk":
            state["errors"] = sorted(
                state["errors"] + event.get("errors", []), key=lambda entry: entry["row"]
            )
            return services.batch_job_record_progress(
                job_id=job_id,
                attempt=attempt,
                rows_done=event["rows_done"],
                rows_failed=event["rows_failed"],
                throughput=event["throughput"],
                errors=state["errors"],
            )
        # A tick while a chunk runs: show the job is alive, and learn whether it is still ours.
        return services.batch_job_record_progress(job_id=job_id, attempt=attempt)

    with tempfile.TemporaryDirectory(prefix="modeldeck-batch-") as folder:
        root = Path(folder)
        try:
            model_path = materialize_version(job.version, root / "model")
            input_path = _local_copy(job.input_key, root / f"input.{job.input_format}")
        except (OSError, Artifact.DoesNotExist) as error:
            services.batch_job_finish(
                job_id=job_id,
                attempt=attempt,
                ok=False,
                reason=f"A stored file of this job cannot be read: {error}",
            )
            return
        output_path = root / "result.csv"
        outcome = batch.run_in_child(
            model_path,
            input_path,
            output_path,
            signature=job.version.signature,
            key_column=job.key_column,
            chunk_rows=settings.BATCH_CHUNK_ROWS,
            max_errors=settings.BATCH_MAX_ERRORS,
            max_cell_chars=settings.BATCH_MAX_CELL_CHARS,
            memory_bytes=settings.BATCH_MEMORY_BYTES,
            timeout_seconds=settings.BATCH_TIMEOUT_SECONDS,
            on_event=on_event,
        )
        if outcome["event"] == "cancelled":
            logger.info("Batch job %s stopped: cancelled or taken over.", job_id)
            return
        report = {**state["report"], "peak_rss_bytes": outcome.get("peak_rss_bytes")}
        if outcome["event"] == "done":
            report.update(chunks=outcome["chunks"], seconds=outcome["seconds"])
            services.batch_job_finish(
                job_id=job_id,
                attempt=attempt,
                ok=True,
                result_path=output_path,
                fields={
                    "rows_total": outcome["rows_total"],
                    "rows_done": outcome["rows_done"],
                    "rows_failed": outcome["rows_failed"],
                    "errors": state["errors"],
                    "report": report,
                },
            )
        else:
            services.batch_job_finish(
                job_id=job_id,
                attempt=attempt,
                ok=False,
                reason=outcome.get("reason", "The batch job failed."),
                fields={"errors": state["errors"], "report": report},
            )


@shared_task(ignore_result=True)
def requeue_stale_batch_jobs() -> int:
    """Re-queue pending jobs whose message was lost and running jobs whose worker died."""
    now = timezone.now()
    stale = BatchJob.objects.filter(
        status=JobStatus.PENDING, updated_at__lt=now - STALE_PENDING
    ) | BatchJob.objects.filter(
        status=JobStatus.RUNNING,
        updated_at__lt=now - settings.BATCH_STALE_AFTER,
    )
    count = 0
    for job_id in stale.values_list("pk", flat=True)[:REQUEUE_BATCH]:
        run_batch_job.delay(job_id)
        count += 1
    return count


@shared_task(ignore_result=True)
def optimize_version(optimization_id: int) -> None:
    """Derive an optimized version in a sandboxed child, then register it (validated like
    any upload); safe to run twice."""
    optimization = (
        Optimization.objects.select_related("source__model").filter(pk=optimization_id).first()
    )
    if optimization is None or optimization.is_terminal:
        return
    timeout = settings.OPTIMIZE_TIMEOUT_SECONDS
    if not services.optimization_start(
        optimization_id=optimization_id,
        stale_before=timezone.now() - timedelta(seconds=timeout + 300),
    ):
        return
    source = optimization.source
    with tempfile.TemporaryDirectory(prefix="modeldeck-optimize-") as folder:
        root = Path(folder)
        try:
            source_path = materialize_version(source, root / "source")
            reference = source.artifacts.filter(kind=ArtifactKind.REFERENCE).first()
            reference_path = (
                _local_copy(reference.storage_key, root / "reference.csv") if reference else None
            )
        except (OSError, Artifact.DoesNotExist) as error:
            services.optimization_fail(
                optimization_id=optimization_id,
                reason=f"The stored model file cannot be read: {error}",
            )
            return
        output_path = root / "optimized.onnx"
        outcome = optimize.run_in_child(
            source_path,
            output_path,
            method=optimization.method,
            signature=source.signature,
            reference_path=reference_path,
            graph_level=settings.OPTIMIZE_GRAPH_LEVEL,
            reference_rows=settings.OPTIMIZE_REFERENCE_ROWS,
            timeout_seconds=timeout,
            memory_bytes=settings.OPTIMIZE_MEMORY_BYTES,
        )
        if not outcome.get("ok"):
            services.optimization_fail(
                optimization_id=optimization_id,
                reason=outcome.get("reason") or "The optimization failed.",
                report=outcome.get("report") or {},
            )
            return
        version = services.optimization_succeed(
            optimization_id=optimization_id, model_path=output_path, report=outcome["report"]
        )
    logger.info("Optimized %s (%s) → %s", source, optimization.method, version)
