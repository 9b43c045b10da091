"""Writes for model versions: upload, validation, approval, archive."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from accounts.actor import Actor
from accounts.models import Role
from accounts.permissions import require_role
from accounts.services import audit_record
from common.errors import ApplicationError
from common.redaction import without_server_paths
from common.validation import field_error
from events.services import event_record
from registry import inspection, profiling
from registry.models import (
    Approval,
    Artifact,
    ArtifactKind,
    ModelVersion,
    RegisteredModel,
    VersionStatus,
)
from registry.services.cleaning import (
    MAX_COMMENT_LENGTH,
    _clean_text,
    clean_metrics,
    clean_params,
    clean_reference_text,
    clean_source,
)
from registry.storage import artifact_storage, new_storage_key
from registry.uploads import HashedUpload, UploadTooLarge, as_hashed_upload, format_bytes

logger = logging.getLogger(__name__)


def _enqueue_validation(version_id: int) -> None:
    """After commit, queue the validation task; if the broker is down, beat requeues it."""
    from registry import tasks

    def send() -> None:
        try:
            tasks.validate_version.delay(version_id)
        except Exception as error:  # broker errors have no common type; the row stays pending
            logger.warning(
                "Could not queue validation of version %s (%s); the requeue job will retry.",
                version_id,
                error,
            )

    transaction.on_commit(send)


def _store(upload: HashedUpload, *, model_id: int, kind: str) -> str:
    key = new_storage_key(model_id=model_id, kind=kind)
    saved = artifact_storage().save(key, upload)
    if saved != key:  # the key is fresh; a backend renaming it would break the link
        artifact_storage().delete(saved)
        raise ApplicationError("The artifact storage renamed a new file; nothing was stored.")
    return saved


def version_register(
    *,
    actor: Actor,
    model: RegisteredModel,
    file: UploadedFile,
    reference: UploadedFile | None = None,
    source: str = "",
    metrics: Any = None,
    params: Any = None,
    git_commit: str = "",
    data_reference: str = "",
    derived_from: int | None = None,
) -> ModelVersion:
    """Store an uploaded ONNX file as the model's next version (pending) and queue validation.

    The file is accepted only when its content is an ONNX model; anything else is refused with
    nothing stored. The optional reference CSV is profiled now (its mapping to the model's
    inputs is checked) and stored next to the model.
    """
    require_role(actor, model.team_id, Role.SCIENTIST)
    if model.is_archived:
        raise ApplicationError(
            f"Model {model.name!r} is archived and takes no new versions.", status=409
        )
    source = clean_source(source)
    metrics = clean_metrics(metrics)
    params = clean_params(params)
    git_commit = clean_reference_text(git_commit, field="git_commit", max_length=64)
    data_reference = clean_reference_text(data_reference, field="data_reference", max_length=2_000)
    parent = None
    if derived_from not in (None, ""):
        try:
            derived_from = int(derived_from)
        except (TypeError, ValueError):
            raise field_error("derived_from", "derived_from is a version number.") from None
        if not 0 < derived_from < 2**31:
            raise field_error("derived_from", "derived_from is a version number.")
        parent = ModelVersion.objects.filter(model=model, number=derived_from).first()
        if parent is None:
            raise field_error(
                "derived_from", f"Model {model.name!r} has no version {derived_from}."
            )
    upload = as_hashed_upload(file, limit=settings.MODELDECK_MAX_UPLOAD_BYTES)
    reference_upload = None
    try:
        if upload.size > settings.MODELDECK_MAX_UPLOAD_BYTES:
            raise UploadTooLarge(settings.MODELDECK_MAX_UPLOAD_BYTES)
        summary = inspection.inspect_model_file(
            Path(upload.temporary_file_path()), parse_limit=_parse_limit()
        )
        profile = None
        if reference is not None:
            limit = _reference_limit()
            reference_upload = as_hashed_upload(reference, limit=limit)
            if reference_upload.size > limit:
                raise ApplicationError(
                    f"The reference CSV is larger than the limit of {format_bytes(limit)}.",
                    status=413,
                )
            profile = profiling.profile_reference_csv(
                Path(reference_upload.temporary_file_path()), inputs=summary.inputs
            )
        artifacts = [(ArtifactKind.MODEL, upload, "application/octet-stream")]
        if reference_upload is not None:
            artifacts.append((ArtifactKind.REFERENCE, reference_upload, "text/csv"))
        version = _version_create(
            actor=actor,
            model=model,
            artifacts=artifacts,
            fields={
                "metrics": metrics,
                "params": params,
                "source": source,
                "git_commit": git_commit,
                "data_reference": data_reference,
                "derived_from": parent,
                "reference_profile": profile,
            },
        )
    finally:
        # Stored files were moved away; anything still here is a refused upload's leftover.
        upload.close()
        if reference_upload is not None:
            reference_upload.close()
    return version


def _version_create(
    *,
    actor: Actor,
    model: RegisteredModel,
    artifacts: list,
    fields: dict,
    audit_action: str = "version.register",
    audit_data: dict | None = None,
) -> ModelVersion:
    """Store the files, then number and record the version in one transaction."""
    stored: list[str] = []
    try:
        keys = {}
        for kind, item, _content_type in artifacts:
            keys[kind] = _store(item, model_id=model.pk, kind=kind)
            stored.append(keys[kind])
        with transaction.atomic():
            # The row lock serialises concurrent uploads so numbers stay dense and unique.
            locked = RegisteredModel.objects.select_for_update().get(pk=model.pk)
            if locked.is_archived:
                raise ApplicationError(f"Model {model.name!r} was archived meanwhile.", status=409)
            number = locked.last_version_number + 1
            RegisteredModel.objects.filter(pk=model.pk).update(
                last_version_number=F("last_version_number") + 1, updated_at=timezone.now()
            )
            version = ModelVersion.objects.create(
                model=model, number=number, created_by=actor.user, **fields
            )
            model_file = artifacts[0][1]
            for kind, item, content_type in artifacts:
                Artifact.objects.create(
                    version=version,
                    kind=kind,
                    storage_key=keys[kind],
                    original_name=item.name or "",
                    size=item.size,
                    sha256=item.sha256,
                    content_type=content_type,
                )
            audit_record(
                actor=actor,
                action=audit_action,
                target=version,
                team=model.team_id,
                data={
                    "number": number,
                    "sha256": model_file.sha256,
                    "size": model_file.size,
                    "reference": fields["reference_profile"] is not None,
                    **(audit_data or {}),
                },
            )
            _enqueue_validation(version.pk)
    except BaseException:
        for key in stored:
            artifact_storage().delete(key)
        raise
    model.last_version_number = number
    return version


def _parse_limit() -> int:
    # Files up to this size are parsed whole in the web process; bigger ones part by part.
    return settings.MODELDECK_PARSE_IN_PROCESS_BYTES


def _reference_limit() -> int:
    return settings.MODELDECK_MAX_REFERENCE_BYTES


@transaction.atomic
def version_mark_validating(*, actor: Actor, version_id: int) -> bool:
    """Compare-and-set pending → validating; False when someone else got there first."""
    updated = ModelVersion.objects.filter(pk=version_id, status=VersionStatus.PENDING).update(
        status=VersionStatus.VALIDATING,
        validation_started_at=timezone.now(),
        status_reason="",
        updated_at=timezone.now(),
    )
    if updated:
        version = ModelVersion.objects.select_related("model").get(pk=version_id)
        audit_record(
            actor=actor,
            action="version.validation_started",
            target=version,
            team=version.model.team_id,
        )
    return bool(updated)


@transaction.atomic
def version_record_validation(
    *,
    actor: Actor,
    version_id: int,
    ok: bool,
    reason: str = "",
    signature: dict | None = None,
    report: dict | None = None,
    smoke_warning: str = "",
    smoke_input: dict | None = None,
) -> ModelVersion | None:
    """Compare-and-set validating → ready | invalid with what validation found (a ready version
    may carry a smoke warning, and the reference-row request its smoke test passed with)."""
    status = VersionStatus.READY if ok else VersionStatus.INVALID
    # What a model declares (names, producer) ends up here; PostgreSQL refuses NUL in text.
    reason, signature, report, smoke_warning, smoke_input = _without_nul(
        (reason, signature, report, smoke_warning, smoke_input)
    )
    updated = ModelVersion.objects.filter(pk=version_id, status=VersionStatus.VALIDATING).update(
        status=status,
        status_reason="" if ok else without_server_paths(reason or "Validation failed.")[:5_000],
        signature=(signature or {}) if ok else {},
        validation_report=report or {},
        smoke_warning=(smoke_warning or "")[:500] if ok else "",
        smoke_input=smoke_input if ok else None,
        updated_at=timezone.now(),
    )
    if not updated:
        return None
    version = ModelVersion.objects.select_related("model").get(pk=version_id)
    audit_record(
        actor=actor,
        action=f"version.{status}",
        target=version,
        team=version.model.team_id,
        data={"reason": version.status_reason[:500]},
    )
    if ok:
        _emit(
            version.model.team_id,
            "version.ready",
            {"model": version.model.name, "version": version.number, "url": version.reference},
        )
    return version


def _emit(team_id: int, event: str, payload: dict[str, Any]) -> None:
    """Record a domain event inside the caller's transaction (delivered after commit)."""
    event_record(team=team_id, kind=event, payload=payload)


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\N{REPLACEMENT CHARACTER}")
    if isinstance(value, dict):
        return {_without_nul(key): _without_nul(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_without_nul(item) for item in value)
    return value


@transaction.atomic
def version_requeue_stale(*, actor: Actor, version_id: int, started_before) -> bool:
    """Compare-and-set a validation that has run too long (its worker died) back to pending."""
    updated = ModelVersion.objects.filter(
        pk=version_id, status=VersionStatus.VALIDATING, validation_started_at__lt=started_before
    ).update(status=VersionStatus.PENDING, updated_at=timezone.now())
    if updated:
        version = ModelVersion.objects.select_related("model").get(pk=version_id)
        audit_record(
            actor=actor,
            action="version.validation_requeued",
            target=version,
            team=version.model.team_id,
        )
        _enqueue_validation(version_id)
    return bool(updated)


@transaction.atomic
def version_approve(
    *, actor: Actor, version: ModelVersion, decision: str, comment: str = ""
) -> ModelVersion:
    """Record a reviewer's decision on a version (deployer or higher)."""
    require_role(actor, version.model.team_id, Role.DEPLOYER)
    if decision not in (Approval.APPROVED, Approval.REJECTED):
        raise field_error("decision", "The decision is 'approved' or 'rejected'.")
    comment = _clean_text(comment, field="comment", max_length=MAX_COMMENT_LENGTH)
    locked = ModelVersion.objects.select_for_update().get(pk=version.pk)
    if decision == Approval.APPROVED and locked.status != VersionStatus.READY:
        raise field_error(
            "decision",
            f"Only ready versions can be approved; version {locked.number} is {locked.status}.",
            status=409,
        )
    if decision == Approval.REJECTED:
        protected = list(locked.aliases.filter(is_protected=True).values_list("name", flat=True))
        if protected:
            raise field_error(
                "decision",
                f"Protected alias {protected[0]!r} points at this "
                "version; move it before rejecting.",
                status=409,
            )
    locked.approval = decision
    locked.approval_comment = comment
    locked.approved_by = actor.user
    locked.approved_at = timezone.now()
    locked.save(
        update_fields=["approval", "approval_comment", "approved_by", "approved_at", "updated_at"]
    )
    audit_record(
        actor=actor,
        action=f"version.{decision}",
        target=locked,
        team=version.model.team_id,
        data={"comment": comment[:500]},
    )
    return locked


@transaction.atomic
def version_archive(*, actor: Actor, version: ModelVersion) -> ModelVersion:
    """Retire a version (scientist; deployer once approved). Aliases must point elsewhere."""
    minimum = Role.DEPLOYER if version.is_approved else Role.SCIENTIST
    require_role(actor, version.model.team_id, minimum)
    aliases = list(version.aliases.values_list("name", flat=True))
    if aliases:
        raise ApplicationError(
            f"Alias {aliases[0]!r} points at version {version.number}; move or delete it first.",
            status=409,
        )
    updated = (
        ModelVersion.objects.filter(pk=version.pk)
        .exclude(status=VersionStatus.ARCHIVED)
        .update(status=VersionStatus.ARCHIVED, updated_at=timezone.now())
    )
    version.refresh_from_db()
    if updated:
        audit_record(
            actor=actor, action="version.archive", target=version, team=version.model.team_id
        )
    return version
