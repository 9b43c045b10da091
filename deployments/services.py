"""Writes for deployments: targets, endpoints and the releases that say what they should serve.

Every endpoint action (deploy, traffic, promote, rollback, stop) is one transaction that locks
the endpoint row, writes one new immutable Release with the next dense number, bumps the
endpoint's generation (the reconciler's fence), appends one AuditEvent and one DeploymentEvent,
and enqueues the reconciler once the transaction commits.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max

from accounts.actor import Actor
from accounts.models import Role, Team
from accounts.permissions import require_member, require_role
from accounts.services import audit_record
from common.errors import ApplicationError
from common.redaction import without_server_paths
from deployments import compatibility, hooks
from deployments.access import key_required_by_default, keys_enforceable
from deployments.models import (
    DeploymentEvent,
    Endpoint,
    EndpointStatus,
    Environment,
    EventLevel,
    Release,
    ReleaseReason,
    Target,
    TargetKind,
    VariantRole,
    resource_name_validator,
)
from deployments.signals import release_written
from events.models import EventKind
from events.services import event_record
from registry.models import ModelVersion
from registry.selectors import version_resolve

logger = logging.getLogger(__name__)

MAX_STRATEGY_STEPS = 20
# Names that the page URLs use next to endpoint names (/endpoints/new/).
RESERVED_ENDPOINT_NAMES = {"new"}
MAX_BAKE_SECONDS = 7 * 24 * 3600
# Replicas of one version (a variant's "replicas", or an autoscale's bounds).
MAX_REPLICAS = 20
# Target kinds that can run several replicas of a version, and those that autoscale them.
SCALABLE_KINDS = {TargetKind.LOCAL, TargetKind.DOCKER, TargetKind.KUBERNETES}
AUTOSCALING_KINDS = {TargetKind.KUBERNETES}
# "Keep the previous release's sticky key" (None would mean "no sticky key").
KEEP_STICKY: Any = object()


# --- helpers shared by the services -------------------------------------------------------------


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


def _check_strategy(strategy: Any) -> list[dict]:
    """Canary steps [{weight, bake_seconds}] with strictly rising weights, at most 100.

    The release stores the steps starting with the one it is at: it serves `steps[0].weight`,
    bakes `steps[0].bake_seconds` once live, then the rollout moves on to `steps[1]`.
    """
    if strategy in (None, []):
        return []
    if not isinstance(strategy, list) or len(strategy) > MAX_STRATEGY_STEPS:
        raise ApplicationError(
            f"strategy must be a list of at most {MAX_STRATEGY_STEPS} steps.", {"strategy": "list"}
        )
    steps: list[dict] = []
    for position, step in enumerate(strategy, start=1):
        if not isinstance(step, dict) or set(step) - {"weight", "bake_seconds"}:
            raise ApplicationError(
                f"strategy step {position} must be {{weight, bake_seconds}}.",
                {"strategy": position},
            )
        weight = _percent(step.get("weight"), f"strategy step {position} weight")
        bake = step.get("bake_seconds", 0)
        if isinstance(bake, bool) or not isinstance(bake, int) or not 0 <= bake <= MAX_BAKE_SECONDS:
            raise ApplicationError(
                f"strategy step {position} bake_seconds must be 0 to {MAX_BAKE_SECONDS}.",
                {"strategy": position},
            )
        if steps and weight <= steps[-1]["weight"]:
            raise ApplicationError(
                f"strategy step {position} must raise the weight above {steps[-1]['weight']} %.",
                {"strategy": position},
            )
        steps.append({"weight": weight, "bake_seconds": bake})
    if steps[0]["weight"] >= 100:
        raise ApplicationError("A strategy starts below 100 %.", {"strategy": 1})
    return steps


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


def _describe(variants: list[dict]) -> str:
    if not variants:
        return "nothing"
    parts = []
    for variant in variants:
        if variant["role"] == VariantRole.SHADOW:
            parts.append(f"{variant['version']} shadow {variant['mirror_percent']} %")
        else:
            parts.append(f"{variant['version']} {variant['weight']} %")
        if variant.get("autoscale"):
            bounds = variant["autoscale"]
            parts[-1] += f" (autoscale {bounds['min']}-{bounds['max']})"
        elif variant.get("replicas", 1) > 1:
            parts[-1] += f" ({variant['replicas']} replicas)"
    return ", ".join(parts)


def _signature_check(
    *, actor: Actor, endpoint: Endpoint, versions: list[ModelVersion], force: bool
) -> dict[str, Any]:
    """Compare each version that would serve live with what the endpoint's primary serves now
    (deployments/compatibility.py). A change that breaks clients is refused with the diff,
    unless a deployer forces it; returns what the audit row records (forced, problems, notes)."""
    primary = next(
        (v for v in _current_variants(endpoint) if v["role"] == VariantRole.PRIMARY), None
    )
    served = (
        ModelVersion.objects.select_related("model").filter(pk=primary["version_id"]).first()
        if primary is not None
        else None
    )
    if served is None or not served.signature:
        return {}
    problems: dict[str, list[str]] = {}
    notes: dict[str, list[str]] = {}
    for version in versions:
        if version.pk == served.pk or not version.signature:
            continue
        comparison = compatibility.compare_signatures(served.signature, version.signature)
        if not comparison.is_compatible:
            if not force:
                message = compatibility.readable_diff(
                    served_reference=served.reference,
                    new_reference=version.reference,
                    comparison=comparison,
                )
                raise ApplicationError(
                    message, {"version": version.reference, "signature": list(comparison.problems)}
                )
            problems[version.reference] = list(comparison.problems)
        if comparison.notes:
            notes[version.reference] = list(comparison.notes)
    if problems:
        # Forcing a breaking change is a deployer's call, whatever the target's environment.
        require_role(actor, endpoint.team_id, Role.DEPLOYER)
    return {
        **({"forced": True, "signature_problems": problems} if problems else {}),
        **({"signature_notes": notes} if notes else {}),
    }


def _keep_scale(variants: list[dict], previous: Release | None) -> list[dict]:
    """A version keeps its replicas (or autoscale) across releases that do not set them: a
    traffic change or promote does not scale anything down."""
    if previous is None:
        return variants
    scales = {
        variant["version_id"]: {k: variant[k] for k in ("replicas", "autoscale") if k in variant}
        for variant in previous.variants
        if "replicas" in variant or "autoscale" in variant
    }
    kept = []
    for variant in variants:
        if "replicas" in variant or "autoscale" in variant:
            kept.append(variant)
        else:
            kept.append({**variant, **scales.get(variant["version_id"], {})})
    return kept


def _release_write(
    *,
    actor: Actor,
    endpoint: Endpoint,
    reason: str,
    variants: list[dict],
    action: str,
    strategy: list[dict] | None = None,
    restores: Release | None = None,
    note: str = "",
    audit_data: dict[str, Any] | None = None,
    sticky: Any = KEEP_STICKY,
    reason_text: str = "",
) -> Release:
    """Write the next release of a locked endpoint, point the endpoint at it, audit, enqueue,
    and tell the higher layers (`signals.release_written`, e.g. to end an experiment)."""
    previous = endpoint.desired_release
    if sticky is KEEP_STICKY:
        sticky = previous.sticky if previous is not None else None
    variants = _keep_scale(variants, previous)
    last = endpoint.releases.aggregate(last=Max("number"))["last"] or 0
    release = Release.objects.create(
        endpoint=endpoint,
        number=last + 1,
        reason=reason,
        variants=variants,
        sticky=sticky,
        replicas=previous.replicas if previous is not None else 1,
        strategy=strategy or [],
        restores=restores,
        actor=actor.user,
        actor_label=actor.label[:200],
        note=note[:500],
    )
    endpoint.generation += 1
    endpoint.desired_release = release
    endpoint.status = EndpointStatus.PENDING
    endpoint.status_reason = ""
    endpoint.save(
        update_fields=["generation", "desired_release", "status", "status_reason", "updated_at"]
    )
    audit_record(
        actor=actor,
        action=action,
        target=endpoint,
        team=endpoint.team_id,
        data={"release": release.number, "variants": variants, **(audit_data or {})},
    )
    summary = f"Release {release.number} ({release.get_reason_display().lower()}): "
    summary += _describe(variants)
    deployment_event_record(
        endpoint=endpoint,
        release=release,
        message=f"{summary} by {actor.label}",
        data={"release": release.number, "generation": endpoint.generation},
    )
    _signature_events(endpoint, release, audit_data or {})
    release_written.send(
        sender=Release,
        release=release,
        previous=previous,
        actor=actor,
        reason_text=reason_text or f"release {release.number} by {actor.label}",
    )
    endpoint_id = endpoint.pk
    transaction.on_commit(lambda: _enqueue_reconcile(endpoint_id))
    return release


def _signature_events(endpoint: Endpoint, release: Release, audit: dict[str, Any]) -> None:
    """Tell the endpoint's log about a forced breaking change and about compatible widening."""
    for reference, problems in audit.get("signature_problems", {}).items():
        deployment_event_record(
            endpoint=endpoint,
            release=release,
            level=EventLevel.WARNING,
            message=f"Forced: {reference} breaks the served signature: " + "; ".join(problems),
        )
    for reference, notes in audit.get("signature_notes", {}).items():
        deployment_event_record(
            endpoint=endpoint,
            release=release,
            message=f"Signature of {reference}: " + "; ".join(notes),
        )


# --- targets ----------------------------------------------------------------------------------


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


def _check_name(name: Any, what: str) -> None:
    if not isinstance(name, str):
        raise ApplicationError(f"A {what} name is text.", {"name": name})
    try:
        resource_name_validator(name)
    except ValidationError as error:
        raise ApplicationError(
            f"{what.capitalize()} name {name!r}: {error.messages[0]}", {"name": name}
        ) from None


# --- endpoints --------------------------------------------------------------------------------


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


@transaction.atomic
def endpoint_advance_rollout(*, endpoint_id: int) -> Release | None:
    """Move a live canary to its next step once the current step has baked (called by beat)."""
    from django.utils import timezone

    endpoint = (
        Endpoint.objects.select_for_update(of=("self",))
        .select_related("desired_release", "target")
        .filter(pk=endpoint_id)
        .first()
    )
    if endpoint is None or endpoint.desired_release is None:
        return None
    release = endpoint.desired_release
    if len(release.strategy) < 2 or release.live_at is None:
        return None
    if endpoint.status != EndpointStatus.LIVE:
        return None
    current, following = release.strategy[0], release.strategy[1:]
    if (timezone.now() - release.live_at).total_seconds() < current["bake_seconds"]:
        return None
    allowed, reason = hooks.rollout_step_allowed(endpoint=endpoint, release=release)
    if not allowed:
        logger.info("rollout of endpoint %s holds: %s", endpoint.pk, reason)
        return None
    variants = [dict(v) for v in release.variants]
    candidate = next((v for v in variants if v["role"] == VariantRole.CANDIDATE), None)
    primary = next((v for v in variants if v["role"] == VariantRole.PRIMARY), None)
    if candidate is None or primary is None:
        return None
    weight = following[0]["weight"]
    if weight >= 100:
        shadows = [v for v in variants if v["role"] == VariantRole.SHADOW]
        variants = [{**candidate, "weight": 100, "role": VariantRole.PRIMARY}, *shadows]
        following = []
    else:
        candidate["weight"] = weight
        primary["weight"] = 100 - weight
    return _release_write(
        actor=Actor.system("rollout"),
        endpoint=endpoint,
        reason=ReleaseReason.ROLLOUT_STEP,
        action="endpoint.rollout_step",
        variants=variants,
        strategy=following,
        note=f"Canary step to {weight} %",
        reason_text=f"the canary step to {weight} % of the rollout",
    )


def local_processes_stop_all() -> int:
    """Stop every serving process the local targets started (when a dev stack or the e2e tests
    shut down); endpoints keep their desired release, so the next reconcile restarts them.
    Returns how many processes were stopped."""
    from deployments.targets import driver_for

    stopped = 0
    for target in Target.objects.filter(kind=TargetKind.LOCAL):
        driver = driver_for(target)
        for resource in driver.list_owned():
            driver.remove_owned(resource=resource)
            stopped += 1
    return stopped
