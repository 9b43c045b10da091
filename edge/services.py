"""Writes for edge fleets: enrollment, device tokens, heartbeats and fleet rollouts.

A fleet is an edge target with (at most) one endpoint; the endpoint's releases say which
version the fleet should serve, exactly as for every other target, and a rollout moves the
devices to it wave by wave. Each device has its own `desired_version` and a rising
`desired_sequence`; the agent pulls a manifest signed with the device's key.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from accounts import tokens
from accounts.actor import Actor
from accounts.models import Role
from accounts.permissions import require_member, require_role
from accounts.services import audit_record
from common.errors import ApplicationError
from deployments.models import (
    Endpoint,
    EventLevel,
    Release,
    ReleaseReason,
    Target,
    TargetKind,
    VariantRole,
    new_device_signing_key,
)
from deployments.services import (
    _check_deployable,
    _lock,
    _release_write,
    _variant,
    _version_resolve,
    deployment_event_record,
)
from deployments.signals import edge_summary_received
from edge.models import (
    DeviceHealth,
    EdgeDevice,
    EdgeRollout,
    EdgeRolloutDevice,
    EnrollmentCode,
    RolloutDeviceState,
    RolloutStatus,
    device_name_validator,
)
from registry.models import ModelVersion

DEVICE_TOKEN_KIND = "edg"  # noqa: S105 (a token kind prefix, not a secret)
MAX_LABELS = 20
MAX_LABEL_LENGTH = 63
MAX_WAVES = 20
MAX_SUMMARIES = 100
MAX_FEATURES = 64
MAX_BUCKETS = 64
MAX_CATEGORIES = 200
MAX_COUNT = 10**12
MAX_INTERVAL_SECONDS = 7 * 24 * 3600
# Summaries older than this are dropped: per-minute rows are kept for a week.
MAX_SUMMARY_AGE = timedelta(days=7)
HEALTH_VALUES = {choice.value for choice in DeviceHealth}


def _setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


def _device_actor(device: EdgeDevice, ip: str | None = None) -> Actor:
    return Actor(user=None, label=f"device {device.target.name}/{device.name}", ip=ip)


# --- validation helpers -----------------------------------------------------------------------


def _whole(value: Any, what: str, *, low: int = 0, high: int = MAX_COUNT) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ApplicationError(
            f"{what} must be a whole number from {low} to {high}.", {what: value}
        )
    return value


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ApplicationError(f"{what} must be a finite number.", {what: str(value)[:40]})
    return float(value)


def _text(value: Any, what: str, limit: int, *, blank: bool = True) -> str:
    if value is None and blank:
        return ""
    if not isinstance(value, str) or len(value) > limit or (not blank and not value):
        raise ApplicationError(
            f"{what} must be text of at most {limit} characters.", {what: "text"}
        )
    return value


def check_labels(labels: Any) -> dict[str, str]:
    """Device labels: at most 20 short `key: value` text pairs."""
    if labels in (None, ""):
        return {}
    if not isinstance(labels, dict) or len(labels) > MAX_LABELS:
        raise ApplicationError(
            f"labels must be an object of at most {MAX_LABELS} text values.", {"labels": "object"}
        )
    for key, value in labels.items():
        if (
            not isinstance(key, str)
            or not isinstance(value, str)
            or not 0 < len(key) <= MAX_LABEL_LENGTH
            or len(value) > MAX_LABEL_LENGTH
        ):
            raise ApplicationError(
                f"Label keys and values are text of 1-{MAX_LABEL_LENGTH} characters.",
                {"labels": str(key)[:40]},
            )
    return dict(labels)


def _require_fleet(target: Target) -> None:
    if target.kind != TargetKind.EDGE:
        raise ApplicationError(f"{target.name} is not an edge fleet.", {"target": target.name})


# --- enrollment and tokens --------------------------------------------------------------------


def _code_digest(plain: str) -> str:
    return hashlib.sha256(plain.encode()).hexdigest()


@transaction.atomic
def enrollment_code_create(
    *, actor: Actor, target: Target, labels: dict | None = None, hours: int | None = None
) -> tuple[EnrollmentCode, str]:
    """A one-time enrollment code for a fleet (deployers, admins); the plain code is returned
    once and only its digest is kept."""
    require_role(actor, target.team_id, Role.DEPLOYER)
    _require_fleet(target)
    maximum = int(_setting("EDGE_ENROLLMENT_CODE_MAX_HOURS", 24 * 30))
    hours = int(_setting("EDGE_ENROLLMENT_CODE_HOURS", 24)) if hours is None else hours
    hours = _whole(hours, "hours", low=1, high=maximum)
    plain = f"enr_{secrets.token_urlsafe(24)}"
    code = EnrollmentCode.objects.create(
        target=target,
        digest=_code_digest(plain),
        labels=check_labels(labels),
        expires_at=timezone.now() + timedelta(hours=hours),
        created_by=actor.user,
    )
    audit_record(
        actor=actor,
        action="edge.enrollment_code.create",
        target=code,
        team=target.team_id,
        data={"fleet": target.name, "hours": hours, "labels": code.labels},
    )
    return code, plain


@transaction.atomic
def device_enroll(*, code: Any, name: Any, ip: str | None = None) -> tuple[EdgeDevice, str, str]:
    """Join a fleet with a one-time code; returns the device, its token and its manifest key
    (both shown once: only the token's digest is stored; the key is random per device)."""
    code = _text(code, "code", 100, blank=False)
    name = _text(name, "name", 63, blank=False)
    try:
        device_name_validator(name)
    except Exception:
        raise ApplicationError(
            "A device name is 1-63 lowercase letters, digits, dots, underscores and hyphens.",
            {"name": name},
        ) from None
    now = timezone.now()
    enrollment = (
        EnrollmentCode.objects.select_for_update(of=("self",))
        .select_related("target")
        .filter(digest=_code_digest(code))
        .first()
    )
    if enrollment is None or enrollment.used_at is not None or enrollment.expires_at <= now:
        # One message for unknown, used and expired codes: nothing to learn by guessing.
        raise ApplicationError("This enrollment code is not valid (unknown, used or expired).", {})
    target = enrollment.target
    if EdgeDevice.objects.filter(target=target, name=name).exists():
        raise ApplicationError(f"Fleet {target.name} already has a device named {name!r}.", {})
    if not EnrollmentCode.objects.filter(pk=enrollment.pk, used_at__isnull=True).update(
        used_at=now
    ):
        raise ApplicationError("This enrollment code is not valid (unknown, used or expired).", {})
    plain, prefix, digest = tokens.generate(DEVICE_TOKEN_KIND)
    baseline = fleet_baseline_version(target)
    try:
        with transaction.atomic():
            device = EdgeDevice.objects.create(
                target=target,
                name=name,
                labels=enrollment.labels,
                token_prefix=prefix,
                token_digest=digest,
                desired_version=baseline,
                desired_sequence=1 if baseline is not None else 0,
            )
    except IntegrityError:
        raise ApplicationError(
            f"Fleet {target.name} already has a device named {name!r}.", {}
        ) from None
    audit_record(
        actor=_device_actor(device, ip),
        action="edge.device.enroll",
        target=device,
        team=target.team_id,
        data={"fleet": target.name, "code": enrollment.pk, "labels": device.labels},
    )
    return device, plain, device.signing_key.hex()


def device_authenticate(plain: str) -> EdgeDevice | None:
    """The active device a presented token belongs to, or None."""
    parsed = tokens.parse(plain)
    if parsed is None or not plain.startswith(f"{DEVICE_TOKEN_KIND}_"):
        return None
    device = (
        EdgeDevice.objects.select_related("target", "desired_version__model")
        .filter(token_prefix=parsed[0])
        .first()
    )
    if device is None or not tokens.matches(plain, device.token_digest) or not device.is_active:
        return None
    return device


@transaction.atomic
def device_revoke(*, actor: Actor, device: EdgeDevice) -> EdgeDevice:
    """Revoke a device's token now (deployers); revoking twice is harmless."""
    require_role(actor, device.target.team_id, Role.DEPLOYER)
    updated = EdgeDevice.objects.filter(pk=device.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    device.refresh_from_db()
    if updated:
        audit_record(
            actor=actor, action="edge.device.revoke", target=device, team=device.target.team_id
        )
    return device


@transaction.atomic
def device_credentials_rotate(*, actor: Actor, device: EdgeDevice) -> tuple[EdgeDevice, str, str]:
    """Give a device a new token and manifest key (deployers); the old ones stop working at
    once. Returns the device, the token and the key (hex), shown once, for the agent's config."""
    require_role(actor, device.target.team_id, Role.DEPLOYER)
    if not device.is_active:
        raise ApplicationError(f"Device {device.name} is revoked; enrol it again instead.", {})
    plain, prefix, digest = tokens.generate(DEVICE_TOKEN_KIND)
    EdgeDevice.objects.filter(pk=device.pk).update(
        token_prefix=prefix,
        token_digest=digest,
        manifest_key=new_device_signing_key(),
        updated_at=timezone.now(),
    )
    device.refresh_from_db()
    audit_record(
        actor=actor,
        action="edge.device.rotate",
        target=device,
        team=device.target.team_id,
        data={"token": prefix},
    )
    return device, plain, device.manifest_key


def _set_desired(device_id: int, version: ModelVersion | None) -> int:
    """Point a device at a version with the next sequence number; returns that number."""
    EdgeDevice.objects.filter(pk=device_id).update(
        desired_version=version, desired_sequence=F("desired_sequence") + 1
    )
    return EdgeDevice.objects.values_list("desired_sequence", flat=True).get(pk=device_id)


# --- the fleet's version ----------------------------------------------------------------------


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


# --- heartbeats -------------------------------------------------------------------------------


def _check_histogram(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise ApplicationError(f"{what} must be a histogram object.", {what: "object"})
    if "categories" in value:
        categories = value["categories"]
        if set(value) != {"categories"} or not isinstance(categories, dict):
            raise ApplicationError(f"{what} must be {{categories: {{value: count}}}}.", {what: "x"})
        if len(categories) > MAX_CATEGORIES:
            raise ApplicationError(
                f"{what} has more than {MAX_CATEGORIES} categories.", {what: "x"}
            )
        return {
            "categories": {
                _text(key, f"{what} category", 100): _whole(count, f"{what} count")
                for key, count in categories.items()
            }
        }
    bounds, counts = value.get("bounds"), value.get("counts")
    if (
        set(value) != {"bounds", "counts"}
        or not isinstance(bounds, list)
        or not isinstance(counts, list)
        or len(bounds) > MAX_BUCKETS
        or len(counts) != len(bounds) + 1
    ):
        raise ApplicationError(
            f"{what} must be {{bounds: [...], counts: [one more than bounds]}}.", {what: "x"}
        )
    bounds = [_number(bound, f"{what} bound") for bound in bounds]
    if bounds != sorted(set(bounds)):
        raise ApplicationError(f"{what} bounds must rise.", {what: "bounds"})
    return {"bounds": bounds, "counts": [_whole(count, f"{what} count") for count in counts]}


def _check_summary(entry: Any, position: int) -> dict:
    what = f"summaries[{position}]"
    if not isinstance(entry, dict):
        raise ApplicationError(f"{what} must be an object.", {"summaries": position})
    at = parse_datetime(_text(entry.get("at"), f"{what}.at", 40, blank=False))
    if at is None or at.tzinfo is None:
        raise ApplicationError(f"{what}.at must be an ISO-8601 time with a zone.", {"at": position})
    summary = {
        "sequence": _whole(entry.get("sequence"), f"{what}.sequence", low=1),
        "at": at,
        "version": _text(entry.get("version"), f"{what}.version", 100, blank=False),
    }
    for name in ("requests", "successes", "client_errors", "server_errors", "rows"):
        summary[name] = _whole(entry.get(name, 0), f"{what}.{name}")
    for name in ("latency_sum", "inference_sum"):
        summary[name] = _number(entry.get(name, 0.0), f"{what}.{name}")
    for name in ("latency", "inference", "prediction"):
        raw = entry.get(name) or {}
        summary[name] = _check_histogram(raw, f"{what}.{name}") if raw else {}
    features = entry.get("features") or {}
    if not isinstance(features, dict) or len(features) > MAX_FEATURES:
        raise ApplicationError(
            f"{what}.features must map at most {MAX_FEATURES} names to histograms.",
            {"features": position},
        )
    summary["features"] = {
        _text(name, f"{what} feature name", 100, blank=False): _check_histogram(
            histogram, f"{what}.features.{str(name)[:40]}"
        )
        for name, histogram in features.items()
    }
    return summary


def check_heartbeat(payload: Any) -> dict:
    """A heartbeat body, validated and bounded; a readable 400 for anything else."""
    if not isinstance(payload, dict):
        raise ApplicationError("A heartbeat is a JSON object.", {"body": "object"})
    state = payload.get("state")
    if not isinstance(state, dict):
        raise ApplicationError("state must be an object.", {"state": "object"})
    health = state.get("health", DeviceHealth.UNKNOWN)
    if health not in HEALTH_VALUES:
        raise ApplicationError(
            f"state.health must be one of {', '.join(sorted(HEALTH_VALUES))}.", {"health": "x"}
        )
    checked = {
        "agent_version": _text(payload.get("agent_version"), "agent_version", 40),
        "current_version": _text(state.get("current_version"), "state.current_version", 100),
        "previous_version": _text(state.get("previous_version"), "state.previous_version", 100),
        "staged_version": _text(state.get("staged_version"), "state.staged_version", 100),
        "applied_sequence": _whole(state.get("applied_sequence", 0), "state.applied_sequence"),
        "failed_sequence": _whole(state.get("failed_sequence", 0), "state.failed_sequence"),
        "failed_version": _text(state.get("failed_version"), "state.failed_version", 100),
        "health": health,
        "status_reason": _text(state.get("reason"), "state.reason", 1000),
    }
    summaries = payload.get("summaries", [])
    if not isinstance(summaries, list) or len(summaries) > MAX_SUMMARIES:
        raise ApplicationError(
            f"summaries must be a list of at most {MAX_SUMMARIES}.", {"summaries": "list"}
        )
    checked["summaries"] = [_check_summary(entry, n) for n, entry in enumerate(summaries)]
    return checked


def _version_by_reference(team_id: int, reference: str) -> int | None:
    model, _, number = reference.rpartition(":")
    if not model or not number.isdigit():
        return None
    return (
        ModelVersion.objects.filter(model__team_id=team_id, model__name=model, number=int(number))
        .values_list("pk", flat=True)
        .first()
    )


def device_heartbeat_record(*, device: EdgeDevice, payload: Any) -> dict:
    """Store a device's reported state and its metric summaries (each summary once, by its
    sequence) in one transaction, then move its fleet's rollout on in another (after the
    device row is released, so the two never wait on each other). Returns what was stored.

    Heartbeats are telemetry, not actions: they write no audit rows."""
    heartbeat = check_heartbeat(payload)
    summaries = heartbeat.pop("summaries")
    with transaction.atomic():
        device = (
            EdgeDevice.objects.select_for_update(of=("self",))
            .select_related("target")
            .get(pk=device.pk)
        )
        now = timezone.now()
        stored = _summaries_store(device=device, summaries=summaries, now=now)
        for name, value in heartbeat.items():
            setattr(device, name, value)
        device.last_seen_at = now
        device.save()
    rollout = EdgeRollout.objects.filter(target=device.target, status=RolloutStatus.RUNNING).first()
    if rollout is not None:
        edge_rollout_advance(rollout_id=rollout.pk)
    return {"summaries_stored": stored, "summary_sequence": device.summary_sequence}


def _summaries_store(*, device: EdgeDevice, summaries: list[dict], now: datetime) -> int:
    endpoint = fleet_endpoint(device.target)
    stored = 0
    for summary in sorted(summaries, key=lambda entry: entry["sequence"]):
        if summary["sequence"] <= device.summary_sequence:
            continue  # sent before; its response was lost
        device.summary_sequence = summary["sequence"]
        at = summary["at"]
        if endpoint is None or at > now + timedelta(minutes=5) or at < now - MAX_SUMMARY_AGE:
            continue
        version_id = _version_by_reference(device.target.team_id, summary["version"])
        if version_id is None:
            continue
        # Monitoring stores it (receiver connected in MonitoringConfig.ready()).
        edge_summary_received.send(
            sender=EdgeDevice, endpoint=endpoint, version_id=version_id, summary=summary
        )
        stored += 1
    return stored


# --- rollouts ---------------------------------------------------------------------------------


def check_waves(waves: Any) -> list[dict]:
    """[{percent: 1-100} | {labels: {...}}], percent waves rising; default one 100 % wave."""
    if waves in (None, []):
        return [{"percent": 100}]
    if not isinstance(waves, list) or len(waves) > MAX_WAVES:
        raise ApplicationError(f"waves must be a list of at most {MAX_WAVES}.", {"waves": "list"})
    checked: list[dict] = []
    last_percent = 0
    for position, wave in enumerate(waves, start=1):
        if isinstance(wave, dict) and set(wave) == {"percent"}:
            percent = _whole(wave["percent"], f"wave {position} percent", low=1, high=100)
            if percent <= last_percent:
                raise ApplicationError(
                    f"wave {position} must raise the share above {last_percent} %.",
                    {"waves": position},
                )
            last_percent = percent
            checked.append({"percent": percent})
        elif isinstance(wave, dict) and set(wave) == {"labels"} and wave["labels"]:
            checked.append({"labels": check_labels(wave["labels"])})
        else:
            raise ApplicationError(
                f"wave {position} must be {{percent: N}} or {{labels: {{key: value}}}}.",
                {"waves": position},
            )
    return checked


def _rollout_options(options: dict[str, Any]) -> dict[str, int]:
    return {
        "wave_interval_seconds": _whole(
            options.get("wave_interval_seconds", 0), "wave_interval_seconds",
            high=MAX_INTERVAL_SECONDS,
        ),
        "wave_timeout_seconds": _whole(
            options.get("wave_timeout_seconds", 3600), "wave_timeout_seconds", low=1,
            high=MAX_INTERVAL_SECONDS,
        ),
        "max_failure_percent": _whole(
            options.get("max_failure_percent", 20), "max_failure_percent", high=100
        ),
        "min_reported": _whole(options.get("min_reported", 1), "min_reported", low=1, high=10000),
    }  # fmt: skip


def _supersede_running(target: Target, *, by: str) -> None:
    now = timezone.now()
    EdgeRollout.objects.filter(target=target, status=RolloutStatus.RUNNING).update(
        status=RolloutStatus.CANCELLED, status_reason=f"Superseded by {by}.", finished_at=now
    )


def _rollout_begin(
    *,
    actor: Actor,
    endpoint: Endpoint,
    release: Release,
    from_version: ModelVersion | None,
    to_version: ModelVersion,
    waves: list[dict],
    options: dict[str, int],
    retry_of: EdgeRollout | None = None,
) -> EdgeRollout:
    _supersede_running(endpoint.target, by=f"release {release.number}")
    rollout = EdgeRollout.objects.create(
        target=endpoint.target,
        endpoint=endpoint,
        release=release,
        from_version=from_version,
        to_version=to_version,
        waves=waves,
        retry_of=retry_of,
        created_by=actor.user,
        **options,
    )
    deployment_event_record(
        endpoint=endpoint,
        release=release,
        message=f"Fleet rollout {rollout.pk} to {to_version.reference} in {len(waves)} wave(s).",
        data={"rollout": rollout.pk},
    )
    edge_rollout_advance(rollout_id=rollout.pk)
    return rollout


@transaction.atomic
def edge_rollout_create(
    *,
    actor: Actor,
    target: Target,
    version: str | ModelVersion,
    waves: Any = None,
    note: str = "",
    retry_of: EdgeRollout | None = None,
    **options: Any,
) -> EdgeRollout:
    """Roll a fleet to a version in waves: writes the endpoint's next release and the rollout
    together (one audit row), and starts the first wave; a running rollout is superseded."""
    require_member(actor, target.team_id)
    _require_fleet(target)
    endpoint = fleet_endpoint(target)
    if endpoint is None:
        raise ApplicationError(
            f"Fleet {target.name} has no endpoint yet; create one on it first.", {}
        )
    endpoint = _lock(endpoint)
    minimum = Role.DEPLOYER if target.is_production else Role.SCIENTIST
    require_role(actor, target.team_id, minimum)
    checked_waves = check_waves(waves)
    checked_options = _rollout_options(options)
    if isinstance(version, str):
        version = _version_resolve(actor=actor, reference=version)
    _check_deployable(version=version, target=target, team_id=target.team_id)
    from_version = release_primary_version(endpoint.desired_release)
    if from_version is not None and from_version.pk == version.pk and retry_of is None:
        raise ApplicationError(f"The fleet already runs {version.reference}.", {})
    release = _release_write(
        actor=actor,
        endpoint=endpoint,
        reason=ReleaseReason.DEPLOY,
        action="edge.rollout.create" if retry_of is None else "edge.rollout.retry",
        variants=[_variant(version, weight=100, role=VariantRole.PRIMARY)],
        note=note or f"Fleet rollout to {version.reference}",
        audit_data={"waves": checked_waves, **checked_options},
    )
    if retry_of is not None and retry_of.from_version_id:
        from_version = retry_of.from_version
    return _rollout_begin(
        actor=actor,
        endpoint=endpoint,
        release=release,
        from_version=from_version,
        to_version=version,
        waves=checked_waves,
        options=checked_options,
        retry_of=retry_of,
    )


@transaction.atomic
def edge_rollout_for_release(*, endpoint: Endpoint, release: Release) -> EdgeRollout | None:
    """Called by the edge driver for a release written by the ordinary endpoint actions
    (create, deploy, rollback): roll the fleet to it in one wave with the default threshold.
    Idempotent: a release that already has its rollout gets no second one."""
    existing = EdgeRollout.objects.filter(endpoint=endpoint, release=release).first()
    if existing is not None or EdgeRollout.objects.filter(abort_release=release).exists():
        return existing
    version = release_primary_version(release)
    if version is None:
        return None
    previous = endpoint.releases.filter(number__lt=release.number).order_by("-number").first()
    return _rollout_begin(
        actor=Actor.system("edge"),
        endpoint=endpoint,
        release=release,
        from_version=release_primary_version(previous),
        to_version=version,
        waves=check_waves(None),
        options=_rollout_options({}),
    )


@transaction.atomic
def edge_rollout_cancel(*, actor: Actor, rollout: EdgeRollout) -> EdgeRollout:
    """Stop a rollout where it is (devices keep what they were sent); cancelling a finished
    rollout changes nothing."""
    require_role(actor, rollout.target.team_id, Role.DEPLOYER)
    updated = EdgeRollout.objects.filter(pk=rollout.pk, status=RolloutStatus.RUNNING).update(
        status=RolloutStatus.CANCELLED,
        status_reason=f"Cancelled by {actor.label}."[:1000],
        finished_at=timezone.now(),
    )
    rollout.refresh_from_db()
    if updated:
        audit_record(
            actor=actor, action="edge.rollout.cancel", target=rollout, team=rollout.target.team_id
        )
        deployment_event_record(
            endpoint=rollout.endpoint,
            release=rollout.release,
            message=f"Fleet rollout {rollout.pk} cancelled by {actor.label}.",
            level=EventLevel.WARNING,
        )
    return rollout


@transaction.atomic
def edge_rollout_retry(*, actor: Actor, rollout: EdgeRollout) -> EdgeRollout:
    """Run an aborted or cancelled rollout again as a new rollout; retrying twice returns the
    retry already running."""
    require_role(actor, rollout.target.team_id, Role.DEPLOYER)
    if rollout.status == RolloutStatus.RUNNING:
        return rollout
    running = rollout.retries.filter(status=RolloutStatus.RUNNING).first()
    if running is not None:
        return running
    if rollout.status == RolloutStatus.SUCCEEDED:
        raise ApplicationError("This rollout succeeded; there is nothing to retry.", {})
    return edge_rollout_create(
        actor=actor,
        target=rollout.target,
        version=rollout.to_version,
        waves=rollout.waves,
        retry_of=rollout,
        wave_interval_seconds=rollout.wave_interval_seconds,
        wave_timeout_seconds=rollout.wave_timeout_seconds,
        max_failure_percent=rollout.max_failure_percent,
        min_reported=rollout.min_reported,
    )


def _refresh_assignments(rollout: EdgeRollout) -> None:
    """Turn devices' reports into assignment states (updated, or failed after a local
    rollback)."""
    target_reference = rollout.to_version.reference
    now = timezone.now()
    assignments = rollout.assignments.select_related("device").filter(
        state__in=(RolloutDeviceState.ASSIGNED, RolloutDeviceState.UPDATED)
    )
    for assignment in assignments:
        device = assignment.device
        failed = (
            device.failed_sequence >= assignment.sequence
            and device.failed_version == target_reference
        )
        if failed:
            state = RolloutDeviceState.FAILED
        elif (
            device.applied_sequence >= assignment.sequence
            and device.current_version == target_reference
        ):
            state = RolloutDeviceState.UPDATED
        else:
            continue
        if state != assignment.state:
            EdgeRolloutDevice.objects.filter(pk=assignment.pk).update(
                state=state, reported_at=now, reason=device.status_reason[:1000]
            )


def _wave_devices(rollout: EdgeRollout, wave: dict) -> list[EdgeDevice]:
    fleet = list(
        EdgeDevice.objects.filter(target=rollout.target, revoked_at__isnull=True).order_by("name")
    )
    assigned = set(rollout.assignments.values_list("device_id", flat=True))
    free = [device for device in fleet if device.pk not in assigned]
    if "percent" in wave:
        wanted = math.ceil(len(fleet) * wave["percent"] / 100)
        return free[: max(0, wanted - len(assigned))]
    labels = wave["labels"]
    return [
        device
        for device in free
        if all(device.labels.get(key) == value for key, value in labels.items())
    ]


def _wave_start(rollout: EdgeRollout, index: int, now: datetime) -> None:
    devices = _wave_devices(rollout, rollout.waves[index])
    for device in devices:
        sequence = _set_desired(device.pk, rollout.to_version)
        EdgeRolloutDevice.objects.create(
            rollout=rollout,
            device=device,
            wave=index,
            previous_version_id=device.desired_version_id,
            sequence=sequence,
        )
    EdgeRollout.objects.filter(pk=rollout.pk).update(current_wave=index, wave_started_at=now)
    rollout.current_wave, rollout.wave_started_at = index, now
    deployment_event_record(
        endpoint=rollout.endpoint,
        release=rollout.release,
        message=(
            f"Fleet rollout {rollout.pk}: wave {index + 1} of {len(rollout.waves)} sends "
            f"{rollout.to_version.reference} to {len(devices)} device(s)."
        ),
        data={"rollout": rollout.pk, "wave": index, "devices": [d.name for d in devices]},
    )


def _abort(rollout: EdgeRollout, reason: str, now: datetime) -> None:
    """Stop the rollout and send every device it moved back to what it served before."""
    for assignment in rollout.assignments.exclude(state=RolloutDeviceState.REVERTED):
        if assignment.previous_version_id is None:
            continue
        if not EdgeDevice.objects.filter(
            pk=assignment.device_id, desired_version=rollout.to_version
        ).exists():
            continue  # a later rollout owns this device now
        _set_desired(assignment.device_id, assignment.previous_version)
        if assignment.state != RolloutDeviceState.FAILED:
            EdgeRolloutDevice.objects.filter(pk=assignment.pk).update(
                state=RolloutDeviceState.REVERTED
            )
    EdgeRollout.objects.filter(pk=rollout.pk).update(
        status=RolloutStatus.ABORTED, status_reason=reason[:1000], finished_at=now
    )
    endpoint = _lock(rollout.endpoint)
    abort_release = None
    if rollout.from_version is not None and endpoint.desired_release_id == rollout.release_id:
        abort_release = _release_write(
            actor=Actor.system("edge-rollout"),
            endpoint=endpoint,
            reason=ReleaseReason.ROLLBACK,
            action="edge.rollout.abort",
            variants=[_variant(rollout.from_version, weight=100, role=VariantRole.PRIMARY)],
            restores=endpoint.releases.filter(number__lt=rollout.release.number)
            .order_by("-number")
            .first(),
            note=f"Fleet rollout {rollout.pk} aborted: {reason}",
            audit_data={"rollout": rollout.pk, "reason": reason},
        )
        EdgeRollout.objects.filter(pk=rollout.pk).update(abort_release=abort_release)
    else:
        audit_record(
            actor=Actor.system("edge-rollout"),
            action="edge.rollout.abort",
            target=rollout,
            team=rollout.target.team_id,
            data={"reason": reason},
        )
    deployment_event_record(
        endpoint=endpoint,
        release=abort_release or rollout.release,
        message=f"Fleet rollout {rollout.pk} aborted: {reason}",
        level=EventLevel.ERROR,
        data={"rollout": rollout.pk},
    )


@transaction.atomic
def edge_rollout_advance(*, rollout_id: int) -> EdgeRollout | None:
    """Move a running rollout on: read device reports, abort past the failure threshold,
    start the next wave when the current one has reported (or timed out) and the rate limit
    allows, finish after the last. Safe to call any time, from beat or a heartbeat."""
    endpoint_id = EdgeRollout.objects.filter(pk=rollout_id).values_list("endpoint_id", flat=True)
    # Endpoint first, then rollout: the same lock order as the services that write releases.
    list(Endpoint.objects.select_for_update().filter(pk__in=endpoint_id).values_list("pk"))
    rollout = (
        EdgeRollout.objects.select_for_update(of=("self",))
        .select_related("target", "endpoint", "to_version__model", "release")
        .filter(pk=rollout_id)
        .first()
    )
    if rollout is None or rollout.is_terminal:
        return rollout
    now = timezone.now()
    _refresh_assignments(rollout)
    counts = dict.fromkeys(RolloutDeviceState.values, 0)
    for state in rollout.assignments.values_list("state", flat=True):
        counts[state] += 1
    reported = counts[RolloutDeviceState.UPDATED] + counts[RolloutDeviceState.FAILED]
    failed = counts[RolloutDeviceState.FAILED]
    if reported >= rollout.min_reported and failed * 100 > rollout.max_failure_percent * reported:
        _abort(
            rollout,
            f"{failed} of {reported} devices failed ({failed * 100 // reported} % > "
            f"{rollout.max_failure_percent} %).",
            now,
        )
        rollout.refresh_from_db()
        return rollout
    while True:
        if rollout.current_wave >= 0:
            waiting = rollout.assignments.filter(
                wave=rollout.current_wave, state=RolloutDeviceState.ASSIGNED
            ).exists()
            elapsed = (now - rollout.wave_started_at).total_seconds()
            if waiting and elapsed < rollout.wave_timeout_seconds:
                break
            last = rollout.current_wave + 1 >= len(rollout.waves)
            if not last and elapsed < rollout.wave_interval_seconds:
                break  # the rate limit: the next wave waits, finishing does not
        if rollout.current_wave + 1 >= len(rollout.waves):
            EdgeRollout.objects.filter(pk=rollout.pk).update(
                status=RolloutStatus.SUCCEEDED,
                status_reason=f"{counts[RolloutDeviceState.UPDATED]} updated, {failed} failed.",
                finished_at=now,
            )
            deployment_event_record(
                endpoint=rollout.endpoint,
                release=rollout.release,
                message=f"Fleet rollout {rollout.pk} finished.",
            )
            break
        _wave_start(rollout, rollout.current_wave + 1, now)
    rollout.refresh_from_db()
    return rollout


def edge_rollouts_advance_all() -> int:
    """Advance every running rollout (beat); returns how many were looked at."""
    ids = list(
        EdgeRollout.objects.filter(status=RolloutStatus.RUNNING).values_list("pk", flat=True)
    )
    for rollout_id in ids:
        edge_rollout_advance(rollout_id=rollout_id)
    return len(ids)
