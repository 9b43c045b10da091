"""Writes for registered models: create, update, archive."""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.actor import Actor
from accounts.models import Role, Team
from accounts.permissions import require_role
from accounts.services import audit_record
from common.validation import field_error
from registry.models import RegisteredModel
from registry.services.cleaning import clean_description, clean_model_name, clean_tags


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
        raise field_error(
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
