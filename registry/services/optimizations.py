"""Optimization: a smaller, faster version derived from a ready one."""

from __future__ import annotations

from pathlib import Path

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.actor import Actor
from accounts.models import Role
from accounts.permissions import require_role
from accounts.services import audit_record
from common.errors import ApplicationError
from common.redaction import without_server_paths
from common.validation import field_error
from registry.models import (
    JOB_ACTIVE,
    ArtifactKind,
    JobStatus,
    ModelVersion,
    Optimization,
    OptimizationMethod,
    VersionStatus,
)
from registry.services.batch_jobs import _enqueue
from registry.services.versions import _version_create, _without_nul
from registry.uploads import HashedUpload


@transaction.atomic
def version_optimize(
    *, actor: Actor, version: ModelVersion, method: str = OptimizationMethod.INT8
) -> Optimization:
    """Queue the derivation of an optimized version from a ready one (scientist)."""
    require_role(actor, version.model.team_id, Role.SCIENTIST)
    if method not in OptimizationMethod.values:
        raise field_error(
            "method", f"The method is one of: {', '.join(OptimizationMethod.values)}."
        )
    locked = ModelVersion.objects.select_for_update().get(pk=version.pk)
    if locked.status != VersionStatus.READY:
        raise field_error(
            "version",
            f"Only ready versions can be optimized; version {locked.number} is {locked.status}.",
            status=409,
        )
    if version.model.is_archived:
        raise ApplicationError(f"Model {version.model.name!r} is archived.", status=409)
    running = Optimization.objects.filter(source=locked, method=method, status__in=JOB_ACTIVE)
    if running.exists():
        raise ApplicationError(
            f"A {method} optimization of version {locked.number} is already running.", status=409
        )
    optimization = Optimization.objects.create(source=locked, method=method, created_by=actor.user)
    audit_record(
        actor=actor,
        action="version.optimize",
        target=locked,
        team=version.model.team_id,
        data={"method": method, "optimization": optimization.pk},
    )
    _enqueue("optimize_version", optimization.pk)
    return optimization


def optimization_start(*, optimization_id: int, stale_before=None) -> bool:
    """Compare-and-set pending → running (or take over one whose worker died)."""
    claimable = Q(status=JobStatus.PENDING)
    if stale_before is not None:
        claimable |= Q(status=JobStatus.RUNNING, started_at__lt=stale_before)
    return bool(
        Optimization.objects.filter(claimable, pk=optimization_id).update(
            status=JobStatus.RUNNING, started_at=timezone.now(), updated_at=timezone.now()
        )
    )


def optimization_fail(*, optimization_id: int, reason: str, report: dict | None = None) -> bool:
    """Compare-and-set running → failed with a readable reason and one audit row."""
    with transaction.atomic():
        updated = Optimization.objects.filter(pk=optimization_id, status=JobStatus.RUNNING).update(
            status=JobStatus.FAILED,
            status_reason=without_server_paths(reason)[:5_000],
            report=_without_nul(report or {}),
            updated_at=timezone.now(),
        )
        if updated:
            optimization = Optimization.objects.select_related("source__model").get(
                pk=optimization_id
            )
            audit_record(
                actor=Actor.system("optimization"),
                action="optimization.failed",
                target=optimization.source,
                team=optimization.source.model.team_id,
                data={"optimization": optimization_id, "reason": reason[:500]},
            )
    return bool(updated)


def optimization_succeed(
    *, optimization_id: int, model_path: Path, report: dict
) -> ModelVersion | None:
    """Register the optimized file as the next version (derived from the source, validated
    like any upload) and mark the optimization succeeded, in one transaction."""
    optimization = (
        Optimization.objects.select_related("source__model", "created_by")
        .filter(pk=optimization_id, status=JobStatus.RUNNING)
        .first()
    )
    if optimization is None:
        return None
    source = optimization.source
    user = optimization.created_by
    actor = Actor(
        user=user,
        label=f"{user.get_username() if user else 'system'} (optimization)",
    )
    upload = HashedUpload.from_path(
        model_path, name=f"{source.model.name}-{source.number}-{optimization.method}.onnx"
    )
    artifacts = [(ArtifactKind.MODEL, upload, "application/octet-stream")]
    reference = source.artifacts.filter(kind=ArtifactKind.REFERENCE).first()
    reference_upload = None
    try:
        if reference is not None:
            from registry.storage import open_artifact

            with open_artifact(reference) as stream:
                reference_upload = HashedUpload.from_stream(
                    stream, name=reference.original_name or "reference.csv"
                )
            artifacts.append((ArtifactKind.REFERENCE, reference_upload, "text/csv"))
        with transaction.atomic():
            locked = Optimization.objects.select_for_update().get(pk=optimization_id)
            if locked.status != JobStatus.RUNNING:
                return None
            version = _version_create(
                actor=actor,
                model=source.model,
                artifacts=artifacts,
                fields={
                    "metrics": {},
                    "params": {**source.params, "optimization": optimization.method},
                    "source": source.source,
                    "git_commit": source.git_commit,
                    "data_reference": source.data_reference,
                    "derived_from": source,
                    "reference_profile": source.reference_profile,
                },
                audit_action="version.optimized",
                audit_data={"from": source.number, "method": optimization.method},
            )
            locked.status = JobStatus.SUCCEEDED
            locked.result = version
            locked.report = _without_nul(report)
            locked.save(update_fields=["status", "result", "report", "updated_at"])
    finally:
        upload.close()
        if reference_upload is not None:
            reference_upload.close()
    return version
