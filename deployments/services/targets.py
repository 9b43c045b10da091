"""Writes for targets: create, check and apply changes, delete (team admins only)."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from accounts.actor import Actor
from accounts.models import Role, Team
from accounts.permissions import require_role
from accounts.services import audit_record
from common.errors import ApplicationError
from deployments.models import (
    Environment,
    Target,
    TargetKind,
)
from deployments.services._common import _check_name, _enqueue_reconcile


@transaction.atomic
def target_create(
    *,
    actor: Actor,
    team: Team,
    name: str,
    kind: str,
    environment: str = Environment.DEV,
    config: dict[str, Any] | None = None,
    description: str = "",
) -> Target:
    """Register a place to run endpoints (team admins only)."""
    require_role(actor, team.pk, Role.ADMIN)
    _check_name(name, "target")
    if kind not in TargetKind.values:
        raise ApplicationError(
            f"Unknown kind {kind!r}; use one of {', '.join(TargetKind.values)}.", {"kind": kind}
        )
    if environment not in Environment.values:
        raise ApplicationError(
            f"Unknown environment {environment!r}; use one of {', '.join(Environment.values)}.",
            {"environment": environment},
        )
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise ApplicationError("config must be a JSON object.", {"config": "object"})
    config = _validated_config(team, kind, config)
    if Target.objects.filter(name=name).exists():
        raise ApplicationError(
            f"A target named {name!r} already exists.", {"name": name}, status=409
        )
    target = Target.objects.create(
        team=team,
        name=name,
        kind=kind,
        environment=environment,
        config=config,
        description=(description or "")[:500],
    )
    audit_record(
        actor=actor,
        action="target.create",
        target=target,
        team=team,
        data={"kind": kind, "environment": environment},
    )
    return target


def target_changes(
    *,
    target: Target,
    environment: str | None = None,
    config: dict[str, Any] | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    """The fields `target_update` would change, checked (raises ApplicationError); writes
    nothing, so forms can show the refusal next to the field."""
    changes: dict[str, Any] = {}
    if environment is not None and environment != target.environment:
        if environment not in Environment.values:
            raise ApplicationError(
                f"Unknown environment {environment!r}; use one of {', '.join(Environment.values)}.",
                {"environment": environment},
            )
        if target.endpoints.exists():
            raise ApplicationError(
                f"The environment of {target.name} cannot change while endpoints use it.",
                {"environment": "in use"},
                status=409,
            )
        changes["environment"] = environment
    if config is not None:
        if not isinstance(config, dict):
            raise ApplicationError("config must be a JSON object.", {"config": "object"})
        config = _validated_config(target.team, target.kind, config)
        if config != target.config:
            changes["config"] = config
    if description is not None and description[:500] != target.description:
        changes["description"] = description[:500]
    return changes


@transaction.atomic
def target_update(
    *,
    actor: Actor,
    target: Target,
    environment: str | None = None,
    config: dict[str, Any] | None = None,
    description: str | None = None,
) -> Target:
    """Change a target's settings, environment or description (team admins only). Its name and
    kind stay; the environment only while no endpoint runs there (it decides which versions
    may serve). Endpoints on it are re-converged with the new settings."""
    require_role(actor, target.team_id, Role.ADMIN)
    target = Target.objects.select_for_update().get(pk=target.pk)
    changes = target_changes(
        target=target, environment=environment, config=config, description=description
    )
    if not changes:
        return target
    for field, value in changes.items():
        setattr(target, field, value)
    target.save(update_fields=[*changes, "updated_at"])
    audit_record(
        actor=actor, action="target.update", target=target, team=target.team_id,
        data={"changed": sorted(changes)},
    )  # fmt: skip
    if "config" in changes:
        for endpoint_id in target.endpoints.values_list("pk", flat=True):
            transaction.on_commit(lambda pk=endpoint_id: _enqueue_reconcile(pk))
    return target


@transaction.atomic
def target_delete(*, actor: Actor, target: Target) -> None:
    """Delete a target no endpoint and no device uses (team admins only)."""
    require_role(actor, target.team_id, Role.ADMIN)
    target = Target.objects.select_for_update().get(pk=target.pk)
    endpoints = sorted(target.endpoints.values_list("name", flat=True))
    if endpoints:
        shown = ", ".join(endpoints[:10]) + (" …" if len(endpoints) > 10 else "")
        raise ApplicationError(
            f"Target {target.name} is used by {len(endpoints)} endpoint(s): {shown}. "
            "Delete them first.",
            {"endpoints": endpoints[:100]},
            status=409,
        )
    devices = target.devices.count()
    if devices:
        raise ApplicationError(
            f"Fleet {target.name} has {devices} enrolled device(s); it cannot be deleted.",
            {"devices": devices},
            status=409,
        )
    audit_record(
        actor=actor, action="target.delete", target=target, team=target.team_id,
        data={"name": target.name, "kind": target.kind},
    )  # fmt: skip
    target.delete()


def _validated_config(team: Team, kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """The driver's check of `config`, then its credentials held to the team's own scope
    (common/credentials.py team_scope)."""
    from common.credentials import CredentialError, check_team_scope
    from deployments.targets import driver_class
    from deployments.targets.base import DriverError

    try:
        driver = driver_class(kind)
    except DriverError:
        # A kind whose driver is not installed yet keeps its settings as given.
        return config
    config = driver.validate_config(config)
    for key, what, value in driver.credential_references(config):
        files, variables = ([value], []) if what == "file" else ([], [value])
        try:
            check_team_scope(team.name, files=files, variables=variables)
        except CredentialError as error:
            raise ApplicationError(f"Target setting {key} {error}", {"config": key}) from None
    return config
