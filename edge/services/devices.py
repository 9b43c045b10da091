"""Device tokens: authenticating, revoking and rotating them, and a device's desired
version."""

from __future__ import annotations

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from accounts import tokens
from accounts.actor import Actor
from accounts.models import Role
from accounts.permissions import require_role
from accounts.services import audit_record
from common.errors import ApplicationError
from deployments.models import (
    new_device_signing_key,
)
from edge.models import (
    EdgeDevice,
)
from edge.services._common import DEVICE_TOKEN_KIND
from registry.models import ModelVersion


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
