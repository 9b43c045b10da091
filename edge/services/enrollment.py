"""Enrollment: one-time codes for a fleet, and a device joining with one."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts import tokens
from accounts.actor import Actor
from accounts.models import Role
from accounts.permissions import require_role
from accounts.services import audit_record
from common.errors import ApplicationError
from deployments.models import (
    Target,
)
from edge.models import (
    EdgeDevice,
    EnrollmentCode,
    device_name_validator,
)
from edge.services._common import (
    DEVICE_TOKEN_KIND,
    _device_actor,
    _require_fleet,
    _text,
    _whole,
    check_labels,
)
from edge.services.fleets import fleet_baseline_version


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
    maximum = int(settings.EDGE_ENROLLMENT_CODE_MAX_HOURS)
    hours = int(settings.EDGE_ENROLLMENT_CODE_HOURS) if hours is None else hours
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
