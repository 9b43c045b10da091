"""Reads for edge fleets, scoped to the caller's teams (devices see only their own state)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import Count, QuerySet
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils import timezone

from accounts.actor import Actor
from deployments.models import Target, TargetKind
from edge.models import EdgeDevice, EdgeRollout, RolloutDeviceState, RolloutStatus
from edge.signing import sign
from registry.models import ArtifactKind, ModelVersion


def fleet_list_for_actor(*, actor: Actor) -> QuerySet[Target]:
    """Edge targets of the actor's teams, with their device counts."""
    return (
        Target.objects.filter(team_id__in=actor.team_ids, kind=TargetKind.EDGE)
        .select_related("team")
        .annotate(device_count=Count("devices"))
        .order_by("name")
    )


def fleet_get_for_actor(*, actor: Actor, name: str) -> Target:
    """One fleet of the actor's teams; 404 otherwise (also for non-edge targets)."""
    return get_object_or_404(
        Target.objects.filter(team_id__in=actor.team_ids, kind=TargetKind.EDGE), name=name
    )


def device_list_for_fleet(*, target: Target) -> QuerySet[EdgeDevice]:
    """A fleet's devices by name."""
    return EdgeDevice.objects.filter(target=target).select_related("desired_version__model")


def rollout_list_for_fleet(*, target: Target) -> QuerySet[EdgeRollout]:
    """A fleet's rollouts, newest first."""
    return EdgeRollout.objects.filter(target=target).select_related(
        "to_version__model", "from_version__model", "release", "endpoint"
    )


def rollout_list_for_actor(*, actor: Actor) -> QuerySet[EdgeRollout]:
    """Rollouts on the actor's teams' fleets."""
    return EdgeRollout.objects.filter(target__team_id__in=actor.team_ids).select_related(
        "target", "to_version__model", "from_version__model", "release", "endpoint"
    )


def rollout_get_for_actor(*, actor: Actor, rollout_id: int) -> EdgeRollout:
    """One rollout of the actor's teams; 404 otherwise."""
    return get_object_or_404(rollout_list_for_actor(actor=actor), pk=rollout_id)


def device_is_online(device: EdgeDevice) -> bool:
    """Whether the device was heard from recently."""
    seconds = float(settings.EDGE_DEVICE_OFFLINE_SECONDS)
    return device.last_seen_at is not None and (
        timezone.now() - device.last_seen_at < timedelta(seconds=seconds)
    )


def rollout_waves(rollout: EdgeRollout) -> list[dict]:
    """Per-wave progress: how many devices each wave moved and how they reported."""
    counts: dict[int, dict[str, int]] = {}
    for wave, state in rollout.assignments.values_list("wave", "state"):
        counts.setdefault(wave, dict.fromkeys(RolloutDeviceState.values, 0))[state] += 1
    waves = []
    for index, wave in enumerate(rollout.waves):
        found = counts.get(index, dict.fromkeys(RolloutDeviceState.values, 0))
        total = sum(found.values())
        done = total - found[RolloutDeviceState.ASSIGNED]
        started = index <= rollout.current_wave
        if "percent" in wave:
            label = f"{wave['percent']} % of devices"
        else:
            label = ", ".join(f"{key}={value}" for key, value in sorted(wave["labels"].items()))
        waves.append(
            {
                "index": index,
                "number": index + 1,
                "label": label,
                "started": started,
                "devices": total,
                "updated": found[RolloutDeviceState.UPDATED],
                "failed": found[RolloutDeviceState.FAILED],
                "reverted": found[RolloutDeviceState.REVERTED],
                "waiting": found[RolloutDeviceState.ASSIGNED],
                "percent_done": round(100 * done / total) if total else (100 if started else 0),
            }
        )
    return waves


def rollout_is_in_flight(rollout: EdgeRollout) -> bool:
    """A running rollout still changes; the page polls only then."""
    return rollout.status == RolloutStatus.RUNNING


def device_manifest(device: EdgeDevice) -> dict:
    """The device's desired state, signed with its own key: `{manifest, signature}`."""
    version: ModelVersion | None = device.desired_version
    manifest: dict = {
        "device": device.name,
        "fleet": device.target.name,
        "sequence": device.desired_sequence,
        "version": None,
    }
    if version is not None:
        artifact = version.artifacts.filter(kind=ArtifactKind.MODEL).first()
        manifest.update(
            {
                "version": version.reference,
                "model": version.model.name,
                "number": version.number,
                "sha256": artifact.sha256 if artifact else "",
                "size": artifact.size if artifact else 0,
                "artifact": reverse("edge-artifact", args=[version.pk]),
                "signature": version.signature or {},
                # Histogram edges of the reference inputs (no raw data): the device's version
                # server tracks its inputs on them, so drift checks compare like with like.
                "profile": version.reference_profile or None,
            }
        )
    return {"manifest": manifest, "signature": sign(manifest, device.signing_key)}


def device_etag(device: EdgeDevice) -> str:
    """Changes exactly when the device's manifest does."""
    return f'"{device.token_prefix}-{device.desired_sequence}"'
