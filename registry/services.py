"""Writes for the registry: models, versions (upload, validation, approval), aliases.

Each service checks the actor's role, runs in one transaction and appends one audit event.
"""

from __future__ import annotations

import json
import logging
import math
import re
import unicodedata
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.core.validators import URLValidator
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.actor import Actor
from accounts.models import Role, Team
from accounts.permissions import require_role
from accounts.services import audit_record
from common.errors import ApplicationError
from common.redaction import without_server_paths
from events.services import event_record
from registry import inspection, profiling
from registry.models import (
    ALIAS_NAME_PATTERN,
    DEFAULT_PROTECTED_ALIAS_NAMES,
    JOB_ACTIVE,
    MODEL_NAME_PATTERN,
    Alias,
    AliasEvent,
    Approval,
    Artifact,
    ArtifactKind,
    BatchJob,
    JobStatus,
    ModelVersion,
    Optimization,
    OptimizationMethod,
    RegisteredModel,
    VersionStatus,
    is_reserved_alias_name,
)
from registry.storage import artifact_storage, new_storage_key
from registry.uploads import HashedUpload, UploadTooLarge, as_hashed_upload, format_bytes

logger = logging.getLogger(__name__)

MAX_DESCRIPTION_LENGTH = 10_000
MAX_TAGS = 50
MAX_TAG_KEY_LENGTH = 64
MAX_TAG_VALUE_LENGTH = 256
TAG_KEY_PATTERN = r"[a-z0-9_.:-]+"
MAX_ENTRIES = 200  # metrics and params
MAX_ENTRY_KEY_LENGTH = 128
MAX_PARAM_TEXT_LENGTH = 1_000
MAX_REASON_LENGTH = 500
MAX_COMMENT_LENGTH = 2_000


def _shown(value: str, limit: int = 60) -> str:
    """A user-supplied string, shortened for an error message."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


def _field_error(field: str, message: str, *, status: int = 400) -> ApplicationError:
    return ApplicationError(message, {field: [message]}, status=status)


def _has_control_characters(value: str, *, allow_newlines: bool = False) -> bool:
    allowed = "\n\r\t" if allow_newlines else ""
    return any(unicodedata.category(char) == "Cc" and char not in allowed for char in value)


# ---------------------------------------------------------------------------------------------
# Input rules shared by the API, the pages, the admin and the demo command.


def clean_model_name(name: Any) -> str:
    """A model name exactly as stored, or an ApplicationError saying what to change."""
    if not isinstance(name, str) or not name:
        raise _field_error("name", "A model needs a name.")
    if len(name) > 63:
        raise _field_error(
            "name", f"A model name has at most 63 characters; this one has {len(name):,}."
        )
    for char in name:
        if not char.isascii():
            code = f"U+{ord(char):04X} {unicodedata.name(char, 'UNKNOWN CHARACTER')}"
            lookalike = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
            hint = f" (it looks like {lookalike.lower()!r})" if lookalike else ""
            raise _field_error(
                "name",
                f"Model names use plain ASCII only: {_shown(name)} contains {char!r} "
                f"({code}){hint}.",
            )
    if "%" in name:
        raise _field_error("name", f"Model names cannot contain '%': send {_shown(name)} decoded.")
    if name != name.lower():
        raise _field_error("name", f"Model names are lowercase: use {name.lower()!r}.")
    if not re.fullmatch(MODEL_NAME_PATTERN, name):
        raise _field_error(
            "name",
            "Use 1-63 characters: lowercase letters, digits, '.', '_' or '-', starting with a "
            "letter or digit.",
        )
    return name


def clean_description(description: Any) -> str:
    """Free text of at most 10 000 characters; newlines allowed, other control characters not."""
    if description is None:
        return ""
    if not isinstance(description, str):
        raise _field_error("description", "The description must be text.")
    if len(description) > MAX_DESCRIPTION_LENGTH:
        raise _field_error(
            "description", f"A description has at most {MAX_DESCRIPTION_LENGTH:,} characters."
        )
    if _has_control_characters(description, allow_newlines=True):
        raise _field_error("description", "The description contains control characters.")
    return description


def clean_tags(tags: Any) -> dict[str, str]:
    """Tags: at most 50 `key: value` string pairs with short, simple keys."""
    if tags is None:
        return {}
    if not isinstance(tags, dict):
        raise _field_error("tags", "Tags must be an object of string keys and string values.")
    if len(tags) > MAX_TAGS:
        raise _field_error("tags", f"A model has at most {MAX_TAGS} tags; got {len(tags):,}.")
    cleaned = {}
    for key, value in tags.items():
        if (
            not isinstance(key, str)
            or not 1 <= len(key) <= MAX_TAG_KEY_LENGTH
            or not re.fullmatch(TAG_KEY_PATTERN, key)
        ):
            raise _field_error(
                "tags",
                f"Tag key {_shown(str(key))}: use 1-{MAX_TAG_KEY_LENGTH} characters among "
                "lowercase letters, digits, '_', '.', ':' and '-'.",
            )
        if not isinstance(value, str):
            raise _field_error("tags", f"Tag {key!r}: the value must be a string.")
        if len(value) > MAX_TAG_VALUE_LENGTH or _has_control_characters(value):
            raise _field_error(
                "tags",
                f"Tag {key!r}: the value has at most "
                f"{MAX_TAG_VALUE_LENGTH} characters and no control "
                "characters.",
            )
        cleaned[key] = value
    return cleaned


def parse_json_object(text: Any, *, field: str) -> dict:
    """A JSON object given as text (multipart fields) or already decoded."""
    if text is None or text == "":
        return {}
    if isinstance(text, str):
        try:
            text = json.loads(text)
        except ValueError as error:
            raise _field_error(field, f"{field} is not valid JSON: {error}.") from None
    if not isinstance(text, dict):
        raise _field_error(field, f"{field} must be a JSON object.")
    return text


def clean_metrics(metrics: Any) -> dict[str, float]:
    """Offline metrics: names to finite numbers."""
    metrics = parse_json_object(metrics, field="metrics")
    _check_entries(metrics, "metrics")
    for key, value in metrics.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise _field_error("metrics", f"Metric {_shown(key)} must be a finite number.")
    return metrics


def clean_params(params: Any) -> dict[str, Any]:
    """Training parameters: names to strings, numbers, booleans or null."""
    params = parse_json_object(params, field="params")
    _check_entries(params, "params")
    for key, value in params.items():
        if value is not None and not isinstance(value, str | int | float | bool):
            raise _field_error(
                "params", f"Parameter {_shown(key)} must be a string, number, boolean or null."
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise _field_error("params", f"Parameter {_shown(key)} must be finite.")
        if isinstance(value, str) and _has_control_characters(value, allow_newlines=True):
            raise _field_error("params", f"Parameter {_shown(key)} contains control characters.")
        if isinstance(value, str) and len(value) > MAX_PARAM_TEXT_LENGTH:
            raise _field_error(
                "params",
                f"Parameter {_shown(key)} is longer than {MAX_PARAM_TEXT_LENGTH} characters.",
            )
    return params


def _check_entries(entries: dict, field: str) -> None:
    if len(entries) > MAX_ENTRIES:
        raise _field_error(field, f"At most {MAX_ENTRIES} {field}; got {len(entries):,}.")
    for key in entries:
        if not key or len(key) > MAX_ENTRY_KEY_LENGTH or _has_control_characters(key):
            raise _field_error(
                field,
                f"{field} names have 1-{MAX_ENTRY_KEY_LENGTH} characters "
                "and no control characters.",
            )


def clean_source(source: Any) -> str:
    """Where the model came from: an http(s) URL, or nothing."""
    if not source:
        return ""
    if not isinstance(source, str) or len(source) > 2_000:
        raise _field_error("source", "The source is an http(s) URL of at most 2 000 characters.")
    try:
        URLValidator(schemes=["http", "https"])(source)
    except ValidationError:
        raise _field_error(
            "source", f"The source must be an http(s) URL; got {_shown(source)}."
        ) from None
    return source


def clean_reference_text(value: Any, *, field: str, max_length: int) -> str:
    """Free-text lineage (git commit, data reference): bounded, printable, no path tricks."""
    if not value:
        return ""
    if not isinstance(value, str) or len(value) > max_length:
        raise _field_error(field, f"{field} has at most {max_length:,} characters.")
    if _has_control_characters(value) or "\x00" in value:
        raise _field_error(field, f"{field} must not contain control characters.")
    # Look through percent-encoding (also double) and Unicode look-alikes (fullwidth dots).
    decoded = value
    for _ in range(3):
        decoded = unquote(decoded)
    normalized = unicodedata.normalize("NFKC", decoded)
    if re.search(r"(^|[\\/])\.\.([\\/]|$)", normalized):
        raise _field_error(field, f"{field} must not step out of a folder with '..'.")
    return value


def clean_alias_name(name: Any) -> str:
    """A storable alias name: short, simple, and not one the registry answers itself."""
    if (
        not isinstance(name, str)
        or not name
        or len(name) > 32
        or not re.fullmatch(ALIAS_NAME_PATTERN, name)
    ):
        raise _field_error(
            "alias",
            "Alias names have 1-32 characters: lowercase letters, digits, '_' or '-', starting "
            "with a letter.",
        )
    if is_reserved_alias_name(name):
        raise _field_error(
            "alias",
            f"'{name}' is reserved: 'latest' and 'v<number>' always mean the newest ready "
            "version and version <number>.",
        )
    return name


def _clean_text(value: Any, *, field: str, max_length: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > max_length:
        raise _field_error(field, f"{field} has at most {max_length:,} characters.")
    if _has_control_characters(value, allow_newlines=True):
        raise _field_error(field, f"{field} must not contain control characters.")
    return value.strip()


# ---------------------------------------------------------------------------------------------
# Models.


@transaction.atomic
def model_create(
    *, actor: Actor, team: Team, name: str, description: str = "", tags: dict | None = None
) -> RegisteredModel:
    """Register a new model name in a team (scientist or higher)."""
    require_role(actor, team.pk, Role.SCIENTIST)
    name = clean_model_name(name)
    description = clean_description(description)
    tags = clean_tags(tags)
    taken = RegisteredModel.objects.filter(name__iexact=name).exists()
    try:
        if not taken:
            with transaction.atomic():
                model = RegisteredModel.objects.create(
                    team=team,
                    name=name,
                    description=description,
                    tags=tags,
                    created_by=actor.user,
                )
    except IntegrityError:
        taken = True
    if taken:
        raise _field_error(
            "name", f"A model named {name!r} already exists (names are global).", status=409
        )
    audit_record(
        actor=actor,
        action="model.create",
        target=model,
        team=team,
        data={"name": name, "tags": tags},
    )
    return model


@transaction.atomic
def model_update(
    *,
    actor: Actor,
    model: RegisteredModel,
    description: str | None = None,
    tags: dict | None = None,
) -> RegisteredModel:
    """Change a model's description or tags (scientist or higher)."""
    require_role(actor, model.team_id, Role.SCIENTIST)
    changed = {}
    if description is not None:
        model.description = clean_description(description)
        changed["description"] = True
    if tags is not None:
        model.tags = clean_tags(tags)
        changed["tags"] = model.tags
    if changed:
        model.save(update_fields=["description", "tags", "updated_at"])
        audit_record(
            actor=actor, action="model.update", target=model, team=model.team_id, data=changed
        )
    return model


@transaction.atomic
def model_archive(*, actor: Actor, model: RegisteredModel) -> RegisteredModel:
    """Archive a model: its history stays, it takes no new versions (deployer or higher)."""
    require_role(actor, model.team_id, Role.DEPLOYER)
    updated = RegisteredModel.objects.filter(pk=model.pk, archived_at__isnull=True).update(
        archived_at=timezone.now(), updated_at=timezone.now()
    )
    model.refresh_from_db()
    if updated:
        audit_record(actor=actor, action="model.archive", target=model, team=model.team_id)
    return model


# ---------------------------------------------------------------------------------------------
# Versions.


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
            raise _field_error("derived_from", "derived_from is a version number.") from None
        if not 0 < derived_from < 2**31:
            raise _field_error("derived_from", "derived_from is a version number.")
        parent = ModelVersion.objects.filter(model=model, number=derived_from).first()
        if parent is None:
            raise _field_error(
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
    return getattr(settings, "MODELDECK_PARSE_IN_PROCESS_BYTES", 64 * 1024 * 1024)


def _reference_limit() -> int:
    return getattr(settings, "MODELDECK_MAX_REFERENCE_BYTES", 64 * 1024 * 1024)


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
        raise _field_error("decision", "The decision is 'approved' or 'rejected'.")
    comment = _clean_text(comment, field="comment", max_length=MAX_COMMENT_LENGTH)
    locked = ModelVersion.objects.select_for_update().get(pk=version.pk)
    if decision == Approval.APPROVED and locked.status != VersionStatus.READY:
        raise _field_error(
            "decision",
            f"Only ready versions can be approved; version {locked.number} is {locked.status}.",
            status=409,
        )
    if decision == Approval.REJECTED:
        protected = list(locked.aliases.filter(is_protected=True).values_list("name", flat=True))
        if protected:
            raise _field_error(
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


# ---------------------------------------------------------------------------------------------
# Aliases.


def _require_alias_mover(actor: Actor, model: RegisteredModel, name: str) -> None:
    if not actor.has_role(model.team_id, Role.DEPLOYER):
        raise ApplicationError(
            f"Alias {name!r} is protected: only deployers and admins can change it.", status=403
        )


@transaction.atomic
def alias_set(
    *,
    actor: Actor,
    model: RegisteredModel,
    name: str,
    version_number: int,
    reason: str = "",
    protected: bool | None = None,
) -> Alias:
    """Point an alias at a version, creating it or moving it; every change is a history row.

    Protected aliases change only by deployers and admins, and only onto approved versions.
    """
    require_role(actor, model.team_id, Role.SCIENTIST)
    name = clean_alias_name(name)
    reason = _clean_text(reason, field="reason", max_length=MAX_REASON_LENGTH)
    # Lock the model: concurrent moves of its aliases queue up, so history stays a chain.
    RegisteredModel.objects.select_for_update().get(pk=model.pk)
    version = None
    if isinstance(version_number, int) and 0 < version_number < 2**31:
        version = ModelVersion.objects.filter(model=model, number=version_number).first()
    if version is None:
        raise _field_error("version", f"Model {model.name!r} has no version {version_number}.")
    if version.status in (VersionStatus.INVALID, VersionStatus.ARCHIVED):
        raise _field_error(
            "version",
            f"Version {version.number} is {version.status}; an alias cannot point at it.",
            status=409,
        )
    alias = Alias.objects.filter(model=model, name=name).first()
    was_protected = alias is not None and alias.is_protected
    if protected is None:
        protected = was_protected if alias else name in DEFAULT_PROTECTED_ALIAS_NAMES
    if protected or was_protected:
        _require_alias_mover(actor, model, name)
    if protected and not version.is_approved:
        raise _field_error(
            "version",
            f"Protected alias {name!r} can only point at an approved "
            f"version; version {version.number} is "
            f"{version.approval}.",
            status=409,
        )
    if alias is not None and alias.version_id == version.pk and alias.is_protected == protected:
        return alias
    previous = alias.version if alias is not None else None
    if alias is None:
        alias = Alias.objects.create(
            model=model, name=name, version=version, is_protected=protected
        )
    else:
        alias.version = version
        alias.is_protected = protected
        alias.save(update_fields=["version", "is_protected", "updated_at"])
    AliasEvent.objects.create(
        model=model,
        alias_name=name,
        from_version=previous,
        to_version=version,
        actor=actor.user,
        actor_label=actor.label[:200],
        reason=reason,
    )
    audit_record(
        actor=actor,
        action="alias.set",
        target=alias,
        team=model.team_id,
        data={
            "alias": name,
            "from": previous.number if previous else None,
            "to": version.number,
            "protected": protected,
            "reason": reason,
        },
    )
    _emit(
        model.team_id,
        "alias.moved",
        {
            "model": model.name,
            "alias": name,
            "from": previous.number if previous else None,
            "to": version.number,
            "by": actor.label,
            "reason": reason,
        },
    )
    return alias


@transaction.atomic
def alias_delete(*, actor: Actor, model: RegisteredModel, name: str, reason: str = "") -> None:
    """Remove an alias; the history keeps a row saying who removed it and from where."""
    require_role(actor, model.team_id, Role.SCIENTIST)
    reason = _clean_text(reason, field="reason", max_length=MAX_REASON_LENGTH)
    RegisteredModel.objects.select_for_update().get(pk=model.pk)
    alias = None
    if isinstance(name, str) and re.fullmatch(ALIAS_NAME_PATTERN, name):
        alias = Alias.objects.select_related("version").filter(model=model, name=name).first()
    if alias is None:
        raise ApplicationError(f"Model {model.name!r} has no alias {str(name)[:40]!r}.", status=404)
    if alias.is_protected:
        _require_alias_mover(actor, model, name)
    previous = alias.version
    audit_record(
        actor=actor,
        action="alias.delete",
        target=alias,
        team=model.team_id,
        data={"alias": name, "from": previous.number, "reason": reason},
    )
    alias.delete()
    AliasEvent.objects.create(
        model=model,
        alias_name=name,
        from_version=previous,
        to_version=None,
        actor=actor.user,
        actor_label=actor.label[:200],
        reason=reason,
    )


# ---------------------------------------------------------------------------------------------
# Batch prediction jobs.


def _batch_setting(name: str, default: int) -> int:
    return getattr(settings, name, default)


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
        raise _field_error(
            "version",
            f"Version {version.reference} is {version.status}; only ready versions score files.",
            status=409,
        )
    key_column = (key_column or "").strip()
    if len(key_column) > 200 or _has_control_characters(key_column):
        raise _field_error("key_column", "The key column is a column name of the file's header.")
    limit = _batch_setting("BATCH_MAX_INPUT_BYTES", 1024**3)
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
            raise _field_error("file", refusal.message) from None
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


# ---------------------------------------------------------------------------------------------
# Optimization: a smaller, faster version derived from a ready one.


@transaction.atomic
def version_optimize(
    *, actor: Actor, version: ModelVersion, method: str = OptimizationMethod.INT8
) -> Optimization:
    """Queue the derivation of an optimized version from a ready one (scientist)."""
    require_role(actor, version.model.team_id, Role.SCIENTIST)
    if method not in OptimizationMethod.values:
        raise _field_error(
            "method", f"The method is one of: {', '.join(OptimizationMethod.values)}."
        )
    locked = ModelVersion.objects.select_for_update().get(pk=version.pk)
    if locked.status != VersionStatus.READY:
        raise _field_error(
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
