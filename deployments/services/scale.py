"""Scaling a version of an endpoint's current release: N replicas, or an autoscale policy."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from accounts.actor import Actor
from accounts.models import Role
from accounts.permissions import require_member, require_role
from common.errors import ApplicationError
from deployments.models import (
    Endpoint,
    Release,
    ReleaseReason,
    TargetKind,
)
from deployments.services._common import _current_variants, _lock
from deployments.services.releases import _release_write

# Replicas of one version (a variant's "replicas", or an autoscale's bounds).
MAX_REPLICAS = 20
# Target kinds that can run several replicas of a version, and those that autoscale them.
SCALABLE_KINDS = {TargetKind.LOCAL, TargetKind.DOCKER, TargetKind.KUBERNETES}
AUTOSCALING_KINDS = {TargetKind.KUBERNETES}


def _whole(value: Any, what: str, low: int, high: int) -> int:
    """An integer low..high, or a readable 400."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ApplicationError(
            f"{what} must be a whole number from {low} to {high}.", {what.split()[0]: value}
        )
    return value


def _check_scale(*, kind: str, replicas: Any, autoscale: Any) -> dict:
    """{"replicas": N} or {"autoscale": {min, max, target_cpu_percent}} for a target kind."""
    if kind not in SCALABLE_KINDS:
        raise ApplicationError(
            f"Scaling does not apply to {kind} targets: each device runs one copy of the "
            "version it is given.",
            {"target": kind},
        )
    if (replicas is None) == (autoscale is None):
        raise ApplicationError(
            "Give either replicas or autoscale {min, max, target_cpu_percent}.",
            {"replicas": replicas, "autoscale": autoscale},
        )
    if replicas is not None:
        return {"replicas": _whole(replicas, "replicas", 1, MAX_REPLICAS)}
    if kind not in AUTOSCALING_KINDS:
        raise ApplicationError(
            f"{kind.capitalize()} targets cannot autoscale (nothing there measures CPU and "
            "adds replicas); set a fixed number of replicas instead.",
            {"autoscale": kind},
        )
    if not isinstance(autoscale, dict) or set(autoscale) != {"min", "max", "target_cpu_percent"}:
        raise ApplicationError(
            "autoscale must be {min, max, target_cpu_percent}.", {"autoscale": "fields"}
        )
    low = _whole(autoscale["min"], "autoscale min", 1, MAX_REPLICAS)
    high = _whole(autoscale["max"], "autoscale max", low, MAX_REPLICAS)
    target = _whole(autoscale["target_cpu_percent"], "autoscale target_cpu_percent", 1, 100)
    return {"autoscale": {"min": low, "max": high, "target_cpu_percent": target}}


@transaction.atomic
def endpoint_scale(
    *,
    actor: Actor,
    endpoint: Endpoint,
    version: str,
    replicas: int | None = None,
    autoscale: dict | None = None,
    note: str = "",
) -> Release:
    """Run a version of the current release on N replicas, or let the platform autoscale it
    between min and max; a new release with the same traffic. Deployer role (any target)."""
    require_member(actor, endpoint.team_id)
    endpoint = _lock(endpoint)
    require_role(actor, endpoint.team_id, Role.DEPLOYER)
    scale = _check_scale(kind=endpoint.target.kind, replicas=replicas, autoscale=autoscale)
    current = _current_variants(endpoint)
    if not current or endpoint.desired_release.is_stop:
        raise ApplicationError("The endpoint serves nothing to scale; deploy a version.", {})
    reference = version.strip() if isinstance(version, str) else version
    variant = next((v for v in current if v["version"] == reference), None)
    if variant is None:
        serving = ", ".join(v["version"] for v in current)
        raise ApplicationError(
            f"{str(reference)[:100]!r} is not in the current release (it serves {serving}).",
            {"version": str(reference)[:100]},
        )
    before = {key: variant[key] for key in ("replicas", "autoscale") if key in variant}
    if before == scale or (not before and scale == {"replicas": 1}):
        raise ApplicationError(f"{variant['version']} already runs that way.", {})
    variants = []
    for entry in current:
        if entry is variant:
            entry = {k: v for k, v in entry.items() if k not in ("replicas", "autoscale")}
            entry.update(scale)
        variants.append(entry)
    return _release_write(
        actor=actor,
        endpoint=endpoint,
        reason=ReleaseReason.SCALE,
        action="endpoint.scale",
        variants=variants,
        note=note or f"Scale {variant['version']}",
        strategy=endpoint.desired_release.strategy,
        audit_data={"version": variant["version"], "before": before, **scale},
    )
