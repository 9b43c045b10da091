"""Writes for endpoints: create, deploy, traffic, promote, rollback and stop, each one release."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction

from accounts.actor import Actor
from accounts.permissions import require_member
from common.errors import ApplicationError
from deployments.access import key_required_by_default, keys_enforceable
from deployments.models import (
    Endpoint,
    Release,
    ReleaseReason,
    Target,
    VariantRole,
)
from deployments.services._common import (
    _check_deployable,
    _check_name,
    _current_variants,
    _lock,
    _percent,
    _require_deploy_role,
    _variant,
    _version_resolve,
)
from deployments.services.releases import KEEP_STICKY, _release_write, _signature_check
from deployments.services.rollouts import _check_strategy
from events.models import EventKind
from events.services import event_record
from registry.models import ModelVersion

# Names that the page URLs use next to endpoint names (/endpoints/new/).
RESERVED_ENDPOINT_NAMES = {"new"}


@transaction.atomic
def endpoint_create(
    *, actor: Actor, name: str, target: Target, version: str | ModelVersion, note: str = ""
) -> Endpoint:
    """Create an endpoint on a target serving one version at 100 % (release 1)."""
    _require_deploy_role(actor=actor, target=target)
    _check_name(name, "endpoint")
    if name in RESERVED_ENDPOINT_NAMES:
        raise ApplicationError(f"{name!r} is reserved; choose another name.", {"name": name})
    if isinstance(version, str):
        version = _version_resolve(actor=actor, reference=version)
    _check_deployable(version=version, target=target, team_id=target.team_id)
    if Endpoint.objects.filter(name=name).exists():
        raise ApplicationError(
            f"An endpoint named {name!r} already exists.", {"name": name}, status=409
        )
    try:
        with transaction.atomic():
            endpoint = Endpoint.objects.create(
                team_id=target.team_id,
                name=name,
                target=target,
                created_by=actor.user,
                require_key=key_required_by_default(target.kind) and keys_enforceable(target),
            )
    except IntegrityError:
        raise ApplicationError(
            f"An endpoint named {name!r} already exists.", {"name": name}, status=409
        ) from None
    endpoint = _lock(endpoint)
    _release_write(
        actor=actor,
        endpoint=endpoint,
        reason=ReleaseReason.DEPLOY,
        action="endpoint.create",
        variants=[_variant(version, weight=100, role=VariantRole.PRIMARY)],
        note=note,
        audit_data={"target": target.name},
    )
    return endpoint


@transaction.atomic
def endpoint_deploy(
    *,
    actor: Actor,
    endpoint: Endpoint,
    version: str | ModelVersion,
    weight: int | None = None,
    strategy: list[dict] | None = None,
    note: str = "",
    force: bool = False,
) -> Release:
    """Deploy a version: at 100 % it replaces what serves; below, it becomes the candidate.
    A version whose signature breaks the served one's clients needs `force` (deployers).

    With a strategy the candidate starts at the first step's weight and the rollout walks the
    steps (see `endpoint_advance_rollout`); `weight` then defaults to, and must equal, that one.
    """
    require_member(actor, endpoint.team_id)
    endpoint = _lock(endpoint)
    _require_deploy_role(actor=actor, target=endpoint.target)
    steps = _check_strategy(strategy)
    if steps:
        if weight is not None and weight != steps[0]["weight"]:
            raise ApplicationError(
                "weight must equal the first strategy step's weight (or be left out).",
                {"weight": weight},
            )
        weight = steps[0]["weight"]
    weight = _percent(100 if weight is None else weight, "weight")
    if isinstance(version, str):
        version = _version_resolve(actor=actor, reference=version)
    _check_deployable(version=version, target=endpoint.target, team_id=endpoint.team_id)
    signature = _signature_check(actor=actor, endpoint=endpoint, versions=[version], force=force)
    current = _current_variants(endpoint)
    primary = next((v for v in current if v["role"] == VariantRole.PRIMARY), None)
    shadows = [
        v for v in current if v["role"] == VariantRole.SHADOW and v["version_id"] != version.pk
    ]
    if weight == 100:
        variants = [_variant(version, weight=100, role=VariantRole.PRIMARY), *shadows]
    else:
        if primary is None:
            raise ApplicationError(
                "Nothing serves on this endpoint to split traffic with; deploy at 100 %.",
                {"weight": weight},
            )
        if primary["version_id"] == version.pk:
            raise ApplicationError(
                f"{version.reference} is already the primary version.",
                {"version": version.reference},
            )
        variants = [
            {**primary, "weight": 100 - weight},
            _variant(version, weight=weight, role=VariantRole.CANDIDATE),
            *shadows,
        ]
    return _release_write(
        actor=actor,
        endpoint=endpoint,
        reason=ReleaseReason.DEPLOY,
        action="endpoint.deploy",
        variants=variants,
        strategy=steps,
        note=note,
        audit_data={
            "version": version.reference,
            "weight": weight,
            "strategy": steps,
            **signature,
        },
        reason_text=f"the deploy of {version.reference} by {actor.label}",
    )


@transaction.atomic
def endpoint_set_traffic(
    *,
    actor: Actor,
    endpoint: Endpoint,
    variants: list[dict],
    note: str = "",
    sticky: Any = KEEP_STICKY,
    force: bool = False,
) -> Release:
    """Set the whole split: [{version, weight, role}]; live weights sum to 100, a shadow's weight
    is the percentage of requests mirrored to it. `sticky` ({"header"|"cookie": name} or None,
    checked by the caller) replaces the sticky key; by default it is kept."""
    require_member(actor, endpoint.team_id)
    endpoint = _lock(endpoint)
    _require_deploy_role(actor=actor, target=endpoint.target)
    if not isinstance(variants, list) or not variants:
        raise ApplicationError("variants must be a non-empty list.", {"variants": "list"})
    resolved: list[dict] = []
    live_versions: list[ModelVersion] = []
    seen: set[int] = set()
    for position, entry in enumerate(variants, start=1):
        if not isinstance(entry, dict):
            raise ApplicationError(f"variant {position} must be an object.", {"variants": position})
        role = entry.get("role", VariantRole.PRIMARY)
        if role not in VariantRole.values:
            raise ApplicationError(
                f"variant {position} role must be one of {', '.join(VariantRole.values)}.",
                {"variants": position},
            )
        version = _version_resolve(actor=actor, reference=entry.get("version"))
        if version.pk in seen:
            raise ApplicationError(
                f"{version.reference} appears twice.", {"version": version.reference}
            )
        seen.add(version.pk)
        _check_deployable(version=version, target=endpoint.target, team_id=endpoint.team_id)
        if role == VariantRole.SHADOW:
            mirror = entry.get("mirror_percent", entry.get("weight"))
            mirror = _percent(mirror, f"variant {position} mirror percent")
            resolved.append(_variant(version, weight=0, role=role, mirror_percent=mirror))
        else:
            weight = _percent(entry.get("weight"), f"variant {position} weight")
            resolved.append(_variant(version, weight=weight, role=role))
            live_versions.append(version)
    live = [v for v in resolved if v["role"] != VariantRole.SHADOW]
    if sum(v["weight"] for v in live) != 100:
        raise ApplicationError(
            f"Weights of the primary and candidate versions sum to "
            f"{sum(v['weight'] for v in live)}, not 100.",
            {"variants": "weights"},
        )
    if sum(1 for v in live if v["role"] == VariantRole.PRIMARY) != 1:
        raise ApplicationError("Exactly one version must be the primary.", {"variants": "roles"})
    signature = _signature_check(
        actor=actor, endpoint=endpoint, versions=live_versions, force=force
    )
    return _release_write(
        actor=actor,
        endpoint=endpoint,
        reason=ReleaseReason.TRAFFIC,
        action="endpoint.traffic",
        variants=resolved,
        note=note,
        sticky=sticky,
        audit_data=signature,
        reason_text=f"the traffic change by {actor.label}",
    )


@transaction.atomic
def endpoint_promote(
    *, actor: Actor, endpoint: Endpoint, note: str = "", force: bool = False
) -> Release:
    """The candidate becomes the primary at 100 %; the old primary stops serving."""
    require_member(actor, endpoint.team_id)
    endpoint = _lock(endpoint)
    _require_deploy_role(actor=actor, target=endpoint.target)
    current = _current_variants(endpoint)
    candidates = [v for v in current if v["role"] == VariantRole.CANDIDATE]
    if not candidates:
        raise ApplicationError("There is no candidate to promote.", {})
    candidate = max(candidates, key=lambda v: v["weight"])
    version = (
        ModelVersion.objects.select_related("model").filter(pk=candidate["version_id"]).first()
    )
    if version is None:
        raise ApplicationError(f"{candidate['version']} no longer exists.", {})
    _check_deployable(version=version, target=endpoint.target, team_id=endpoint.team_id)
    signature = _signature_check(actor=actor, endpoint=endpoint, versions=[version], force=force)
    shadows = [v for v in current if v["role"] == VariantRole.SHADOW]
    variants = [{**candidate, "weight": 100, "role": VariantRole.PRIMARY}, *shadows]
    return _release_write(
        actor=actor,
        endpoint=endpoint,
        reason=ReleaseReason.PROMOTE,
        action="endpoint.promote",
        variants=variants,
        note=note,
        audit_data={"version": candidate["version"], **signature},
        reason_text=f"the promotion of {candidate['version']} by {actor.label}",
    )


def rollback_default(endpoint: Endpoint) -> Release | None:
    """The last release that was live before the current desired one (not a stop)."""
    current = endpoint.desired_release
    releases = endpoint.releases.filter(live_at__isnull=False).exclude(reason=ReleaseReason.STOP)
    if current is not None:
        releases = releases.filter(number__lt=current.number)
    return releases.order_by("-number").first()


@transaction.atomic
def endpoint_rollback(
    *,
    actor: Actor,
    endpoint: Endpoint,
    release_number: int | None = None,
    note: str = "",
    force: bool = False,
) -> Release:
    """Write a new release equal to an earlier one (default: the last one that was live)."""
    require_member(actor, endpoint.team_id)
    endpoint = _lock(endpoint)
    _require_deploy_role(actor=actor, target=endpoint.target)
    if release_number is None:
        earlier = rollback_default(endpoint)
        if earlier is None:
            raise ApplicationError("No earlier live release to roll back to.", {})
    else:
        if isinstance(release_number, bool) or not isinstance(release_number, int):
            raise ApplicationError("release must be a release number.", {"release": release_number})
        earlier = endpoint.releases.filter(number=release_number).first()
        if earlier is None:
            raise ApplicationError(
                f"This endpoint has no release {release_number}.", {"release": release_number}
            )
        if endpoint.desired_release_id == earlier.pk:
            raise ApplicationError(
                f"Release {release_number} is the current release.", {"release": release_number}
            )
        if earlier.is_stop:
            raise ApplicationError(
                f"Release {release_number} stopped the endpoint; use stop instead.",
                {"release": release_number},
            )
    live_versions = []
    for variant in earlier.variants:
        # Versions are re-checked for existence and readiness, not for approval: going back to
        # what served before must not be blocked by a later review.
        version = (
            ModelVersion.objects.select_related("model").filter(pk=variant["version_id"]).first()
        )
        if version is None or not version.is_deployable:
            raise ApplicationError(
                f"Release {earlier.number} used {variant['version']}, which can no longer serve.",
                {"release": earlier.number},
            )
        if variant["role"] != VariantRole.SHADOW:
            live_versions.append(version)
    signature = _signature_check(
        actor=actor, endpoint=endpoint, versions=live_versions, force=force
    )
    release = _release_write(
        actor=actor,
        endpoint=endpoint,
        reason=ReleaseReason.ROLLBACK,
        action="endpoint.rollback",
        # Explicitly one replica where the earlier release set none: a rollback restores the
        # earlier scale too, instead of keeping the current one.
        variants=[
            v if "replicas" in v or "autoscale" in v else {**v, "replicas": 1}
            for v in earlier.variants
        ],
        restores=earlier,
        note=note or f"Roll back to release {earlier.number}",
        audit_data={"restores": earlier.number, **signature},
        reason_text=f"the rollback to release {earlier.number} by {actor.label}",
    )
    event_record(
        team=endpoint.team_id,
        kind=EventKind.ROLLBACK,
        payload={
            "endpoint": endpoint.name,
            "release": release.number,
            "restores": earlier.number,
            "by": actor.label,
            "note": release.note,
        },
    )
    return release


@transaction.atomic
def endpoint_stop(*, actor: Actor, endpoint: Endpoint, note: str = "") -> Release:
    """Stop serving: a release with no variants; the reconciler removes every process."""
    require_member(actor, endpoint.team_id)
    endpoint = _lock(endpoint)
    _require_deploy_role(actor=actor, target=endpoint.target)
    if endpoint.desired_release is not None and endpoint.desired_release.is_stop:
        raise ApplicationError("This endpoint is already stopped.", {})
    return _release_write(
        actor=actor,
        endpoint=endpoint,
        reason=ReleaseReason.STOP,
        action="endpoint.stop",
        variants=[],
        note=note,
        reason_text=f"the stop of the endpoint by {actor.label}",
    )
