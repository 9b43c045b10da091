"""The fleet's version: its endpoint, and what its release wants the devices to serve."""

from __future__ import annotations

from deployments.models import (
    Endpoint,
    Release,
    Target,
    VariantRole,
)
from edge.models import (
    EdgeRollout,
    RolloutStatus,
)
from registry.models import ModelVersion


def fleet_endpoint(target: Target) -> Endpoint | None:
    """The endpoint serving on a fleet (an edge target holds at most one)."""
    return Endpoint.objects.filter(target=target).select_related("desired_release").first()


def release_primary_version(release: Release | None) -> ModelVersion | None:
    """The version a release wants a fleet to serve (its primary variant)."""
    if release is None or release.is_stop:
        return None
    for variant in release.variants:
        if variant["role"] == VariantRole.PRIMARY:
            return ModelVersion.objects.filter(pk=variant["version_id"]).first()
    return None


def fleet_baseline_version(target: Target) -> ModelVersion | None:
    """What a device joining the fleet now should serve: the proven version while a rollout
    runs, else what the fleet's endpoint wants."""
    running = EdgeRollout.objects.filter(target=target, status=RolloutStatus.RUNNING).first()
    if running is not None:
        return running.from_version or running.to_version
    endpoint = fleet_endpoint(target)
    return release_primary_version(endpoint.desired_release) if endpoint else None
