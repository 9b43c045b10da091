"""Writing an endpoint's next immutable release: the signature check, kept scale, audit and
progress log, and the reconcile enqueued on commit."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Max

from accounts.actor import Actor
from accounts.models import Role
from accounts.permissions import require_role
from accounts.services import audit_record
from common.errors import ApplicationError
from deployments import compatibility
from deployments.models import (
    Endpoint,
    EndpointStatus,
    EventLevel,
    Release,
    VariantRole,
)
from deployments.services._common import (
    _current_variants,
    _enqueue_reconcile,
    deployment_event_record,
)
from deployments.signals import release_written
from registry.models import ModelVersion

# "Keep the previous release's sticky key" (None would mean "no sticky key").
KEEP_STICKY: Any = object()


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
