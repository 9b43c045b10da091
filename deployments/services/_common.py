"""Helpers the deployments services share: enqueueing the reconciler, the progress log,
resolving and checking versions, locking an endpoint, validating names and percentages."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import ValidationError

from accounts.actor import Actor
from accounts.models import Role
from accounts.permissions import require_role
from common.errors import ApplicationError
from common.redaction import without_server_paths
from deployments.models import (
    DeploymentEvent,
    Endpoint,
    EventLevel,
    Release,
    Target,
    resource_name_validator,
)
from registry.models import ModelVersion
from registry.selectors import version_resolve

logger = logging.getLogger(__name__)


def _enqueue_reconcile(endpoint_id: int) -> None:
    """Ask a worker to converge the endpoint; beat re-runs it anyway, so a lost message heals."""
    from deployments.tasks import reconcile_endpoint

    try:
        reconcile_endpoint.delay(endpoint_id)
    except Exception:  # the broker being down must not turn a committed change into a 500
        logger.exception("could not enqueue reconcile of endpoint %s; beat will retry", endpoint_id)


def deployment_event_record(
    *,
    endpoint: Endpoint | None = None,
    message: str,
    release: Release | None = None,
    build=None,
    level: str = EventLevel.INFO,
    data: dict[str, Any] | None = None,
) -> DeploymentEvent:
    """Append one line to an endpoint's (or build's) progress log."""
    return DeploymentEvent.objects.create(
        endpoint=endpoint,
        release=release,
        build=build,
        level=level,
        message=without_server_paths(message)[:1000],
        data=data or {},
    )


def _version_resolve(*, actor: Actor, reference: Any) -> ModelVersion:
    """A version from "model:N" or "model@alias" among the actor's teams; 400 when unknown."""
    if not isinstance(reference, str) or not reference.strip():
        raise ApplicationError(
            "Name a version as 'model:N' or 'model@alias'.", {"version": ["Required."]}
        )
    return version_resolve(actor=actor, reference=reference.strip())


def _require_deploy_role(*, actor: Actor, target: Target) -> None:
    """404 for other teams; production needs a deployer, other environments a scientist."""
    minimum = Role.DEPLOYER if target.is_production else Role.SCIENTIST
    require_role(actor, target.team_id, minimum)


def _check_deployable(*, version: ModelVersion, target: Target, team_id: int) -> None:
    """A version may serve on this target: same team, validated, approved for production."""
    if version.model.team_id != team_id:
        raise ApplicationError(
            f"{version.reference} belongs to another team.", {"version": version.reference}
        )
    if not version.is_deployable:
        raise ApplicationError(
            f"{version.reference} is {version.status}, not ready; only validated versions serve.",
            {"version": version.reference},
        )
    if target.is_production and not version.is_approved:
        raise ApplicationError(
            f"Production targets take only approved versions; {version.reference} is "
            f"{version.approval}.",
            {"version": version.reference},
        )


def _variant(version: ModelVersion, *, weight: int, role: str, mirror_percent: int = 0) -> dict:
    return {
        "version_id": version.pk,
        "version": version.reference,
        "weight": weight,
        "role": role,
        "mirror_percent": mirror_percent,
    }


def _percent(value: Any, what: str) -> int:
    """An integer 0-100, or a readable 400."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise ApplicationError(f"{what} must be a whole number from 0 to 100.", {what: value})
    return value


def _lock(endpoint: Endpoint) -> Endpoint:
    """The endpoint row, locked for the rest of the transaction (dense release numbers)."""
    return (
        Endpoint.objects.select_for_update(of=("self",))
        .select_related("target", "desired_release")
        .get(pk=endpoint.pk)
    )


def _current_variants(endpoint: Endpoint) -> list[dict]:
    release = endpoint.desired_release
    return [dict(variant) for variant in release.variants] if release is not None else []


def _check_name(name: Any, what: str) -> None:
    if not isinstance(name, str):
        raise ApplicationError(f"A {what} name is text.", {"name": name})
    try:
        resource_name_validator(name)
    except ValidationError as error:
        raise ApplicationError(
            f"{what.capitalize()} name {name!r}: {error.messages[0]}", {"name": name}
        ) from None
