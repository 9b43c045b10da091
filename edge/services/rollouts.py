"""Fleet rollouts: moving the devices to a release's version wave by wave, aborting past
the failure threshold."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from accounts.actor import Actor
from accounts.models import Role
from accounts.permissions import require_member, require_role
from accounts.services import audit_record
from common.errors import ApplicationError
from common.retry import retry_on_deadlock
from deployments.models import (
    Endpoint,
    EventLevel,
    Release,
    ReleaseReason,
    Target,
    VariantRole,
)
from deployments.services import (
    _check_deployable,
    _lock,
    _release_write,
    _variant,
    _version_resolve,
    deployment_event_record,
)
from edge.models import (
    EdgeDevice,
    EdgeRollout,
    EdgeRolloutDevice,
    RolloutDeviceState,
    RolloutStatus,
)
from edge.services._common import (
    MAX_INTERVAL_SECONDS,
    MAX_WAVES,
    _require_fleet,
    _whole,
    check_labels,
)
from edge.services.devices import _set_desired
from edge.services.fleets import fleet_endpoint, release_primary_version
from registry.models import ModelVersion


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


@retry_on_deadlock
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
