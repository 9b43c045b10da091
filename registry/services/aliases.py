"""Writes for aliases: every move and removal is a history row."""

from __future__ import annotations

import re

from django.db import transaction

from accounts.actor import Actor
from accounts.models import Role
from accounts.permissions import require_role
from accounts.services import audit_record
from common.errors import ApplicationError
from common.validation import field_error
from registry.models import (
    ALIAS_NAME_PATTERN,
    DEFAULT_PROTECTED_ALIAS_NAMES,
    Alias,
    AliasEvent,
    ModelVersion,
    RegisteredModel,
    VersionStatus,
)
from registry.services.cleaning import (
    MAX_REASON_LENGTH,
    _clean_text,
    clean_alias_name,
)
from registry.services.versions import _emit


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
        raise field_error("version", f"Model {model.name!r} has no version {version_number}.")
    if version.status in (VersionStatus.INVALID, VersionStatus.ARCHIVED):
        raise field_error(
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
        raise field_error(
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
