"""Reads for deployments, always scoped to the caller's teams."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from django.urls import reverse

from accounts.actor import Actor
from deployments.models import (
    Build,
    DeploymentEvent,
    Endpoint,
    EndpointStatus,
    Release,
    Target,
    VariantRole,
)

# The statuses during which an endpoint's page keeps polling for progress.
POLLING_STATUSES = {EndpointStatus.PENDING, EndpointStatus.PROGRESSING}


def target_list_for_actor(*, actor: Actor) -> QuerySet[Target]:
    """Targets of the actor's teams."""
    return Target.objects.filter(team_id__in=actor.team_ids).select_related("team")


def target_get_for_actor(*, actor: Actor, name: str) -> Target:
    """One target of the actor's teams; 404 otherwise."""
    return get_object_or_404(target_list_for_actor(actor=actor), name=name)


def endpoint_list_for_actor(*, actor: Actor) -> QuerySet[Endpoint]:
    """Endpoints of the actor's teams, with what the list pages show."""
    return Endpoint.objects.filter(team_id__in=actor.team_ids).select_related(
        "team", "target", "desired_release", "live_release"
    )


def endpoint_get_for_actor(*, actor: Actor, name: str) -> Endpoint:
    """One endpoint of the actor's teams; 404 otherwise."""
    return get_object_or_404(endpoint_list_for_actor(actor=actor), name=name)


def release_list_for_endpoint(*, endpoint: Endpoint) -> QuerySet[Release]:
    """An endpoint's releases, newest first."""
    return endpoint.releases.select_related("restores").order_by("-number")


def event_list_for_endpoint(*, endpoint: Endpoint, since: int = 0) -> QuerySet[DeploymentEvent]:
    """Progress lines after event id `since`, oldest first (the API pages them)."""
    return endpoint.events.filter(id__gt=since).select_related("release").order_by("id")


def event_tail_for_endpoint(*, endpoint: Endpoint, count: int = 50) -> list[DeploymentEvent]:
    """The last `count` progress lines, oldest first."""
    events = endpoint.events.select_related("release").order_by("-id")[:count]
    return list(reversed(events))


def build_list_for_actor(*, actor: Actor) -> QuerySet[Build]:
    """Builds on the actor's teams' targets."""
    return Build.objects.filter(target__team_id__in=actor.team_ids).select_related(
        "target", "version__model"
    )


def build_get_for_actor(*, actor: Actor, build_id: int) -> Build:
    """One build of the actor's teams; 404 otherwise."""
    return get_object_or_404(build_list_for_actor(actor=actor), pk=build_id)


def release_traffic(release: Release | None) -> list[dict]:
    """A release's split as [{version, weight, role, mirror_percent}]."""
    if release is None:
        return []
    return [
        {
            "version": variant["version"],
            "weight": variant["weight"],
            "role": variant["role"],
            "mirror_percent": variant.get("mirror_percent", 0),
        }
        for variant in release.variants
    ]


def _traffic_summary(release: Release | None) -> str:
    parts = []
    for variant in release_traffic(release):
        if variant["role"] == VariantRole.SHADOW:
            parts.append(f"{variant['version']} shadow {variant['mirror_percent']} %")
        else:
            parts.append(f"{variant['version']} {variant['weight']} %")
    return ", ".join(parts)


_HEALTH = {
    EndpointStatus.LIVE: "ok",
    EndpointStatus.PENDING: "warn",
    EndpointStatus.PROGRESSING: "warn",
    EndpointStatus.DEGRADED: "warn",
    EndpointStatus.STOPPED: "warn",
    EndpointStatus.FAILED: "bad",
}


def endpoint_cards_for_actor(*, actor: Actor) -> list[dict]:
    """One health card per endpoint of the actor's teams, for the home dashboard."""
    cards = []
    for endpoint in endpoint_list_for_actor(actor=actor).order_by("name"):
        if endpoint.status == EndpointStatus.STOPPED:
            summary = "Stopped"
        elif endpoint.status in (EndpointStatus.FAILED, EndpointStatus.DEGRADED):
            summary = endpoint.status_reason[:160]
        else:
            summary = _traffic_summary(endpoint.live_release or endpoint.desired_release)
        cards.append(
            {
                "name": endpoint.name,
                "status": endpoint.status,
                "health": _HEALTH.get(endpoint.status, "warn"),
                "summary": summary or "No release yet",
                "url": reverse("deployments:endpoint-detail", args=[endpoint.name]),
            }
        )
    return cards


def endpoint_ids_rolling_out() -> list[int]:
    """Live endpoints whose release still has canary steps to run."""
    live = Endpoint.objects.filter(status=EndpointStatus.LIVE).select_related("desired_release")
    return [
        endpoint.pk
        for endpoint in live
        if endpoint.desired_release is not None and len(endpoint.desired_release.strategy) > 1
    ]


def endpoint_ids_to_reconcile(*, failed_retry_before: datetime) -> list[int]:
    """Endpoints that want something, except those that failed after `failed_retry_before`
    (a failed endpoint is retried at most that often; a new release retries at once)."""
    endpoints = Endpoint.objects.filter(desired_release__isnull=False).exclude(
        status=EndpointStatus.FAILED, last_reconciled_at__gt=failed_retry_before
    )
    return list(endpoints.values_list("pk", flat=True))


def endpoint_replicas(*, endpoint: Endpoint) -> list[dict]:
    """Replicas per version of an endpoint: the desired release's versions (ready as of the
    last reconcile / desired by the release) and the versions kept warm for a rollback."""
    from django.utils import timezone

    from deployments.reconciler import variant_replicas, warm_window

    release = endpoint.desired_release
    observed = endpoint.replica_status or {}
    rows = []
    for variant in release.variants if release is not None else []:
        status = observed.get(str(variant["version_id"]), {})
        rows.append(
            {
                "version": variant["version"],
                "role": variant["role"],
                "ready": status.get("ready", 0),
                "desired": variant_replicas(variant),
                "autoscale": variant.get("autoscale"),
                "warm_until": None,
            }
        )
    warm_versions, until = warm_window(endpoint)
    if until is not None and until > timezone.now():
        for key, status in observed.items():
            if int(key) in warm_versions:
                rows.append(
                    {
                        "version": status.get("version", ""),
                        "role": "warm",
                        "ready": status.get("ready", 0),
                        "desired": status.get("desired", 1),
                        "autoscale": None,
                        "warm_until": until,
                    }
                )
    return rows
