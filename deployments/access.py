"""Who may call an endpoint and who may steer its gateway: inference keys, the key
requirement, and the gateway admin token. Writes follow the services rules (one call = one
transaction = one audit row); the gateway learns about changes from the next reconcile run,
which sends the key digests with the route table."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from accounts import tokens
from accounts.actor import Actor
from accounts.models import AuditEvent, Role
from accounts.permissions import require_role
from accounts.services import audit_record
from common.errors import ApplicationError
from deployments.models import Endpoint, EndpointKey, TargetKind, new_gateway_token

logger = logging.getLogger(__name__)

# Inference keys look like API tokens: `mdi_<prefix>_<secret>`, stored as a SHA-256 digest.
KEY_KIND = "mdi"
MAX_ACTIVE_KEYS = 50
# Endpoints on these targets are reachable from other machines, so they start locked.
KEY_REQUIRED_BY_DEFAULT = {TargetKind.DOCKER, TargetKind.KUBERNETES}


def key_required_by_default(kind: str) -> bool:
    """Whether a new endpoint on a target of this kind requires an inference key."""
    return kind in KEY_REQUIRED_BY_DEFAULT


def keys_enforceable(target) -> bool:
    """Whether the target's traffic passes a modeldeck gateway, which checks the keys. With
    Kubernetes `traffic: gateway-api` another implementation splits the traffic, and edge
    devices serve on their own."""
    if target.kind == TargetKind.EDGE:
        return False
    return not (
        target.kind == TargetKind.KUBERNETES
        # kubernetes.config.TRAFFIC_GATEWAY_API, spelled out: that module imports this one.
        and (target.config or {}).get("traffic") == "gateway-api"
    )


def endpoint_access_document(endpoint: Endpoint) -> dict[str, Any]:
    """The `access` part of the gateway's route table: the requirement and active key digests."""
    digests = sorted(
        EndpointKey.objects.filter(endpoint=endpoint, revoked_at__isnull=True).values_list(
            "digest", flat=True
        )
    )
    return {"require_key": endpoint.require_key, "keys": digests}


def access_changed_since(endpoint: Endpoint, moment) -> bool:
    """Whether the endpoint's keys or key requirement changed after `moment` (None: never
    reconciled), which is when a gateway legitimately holds outdated key digests."""
    if moment is None:
        return True
    keys = EndpointKey.objects.filter(endpoint=endpoint)
    if keys.filter(Q(created_at__gt=moment) | Q(revoked_at__gt=moment)).exists():
        return True
    return AuditEvent.objects.filter(
        action="endpoint.require_key",
        object_type=Endpoint._meta.label_lower,
        object_id=str(endpoint.pk),
        created_at__gt=moment,
    ).exists()


def endpoint_key_list(*, endpoint: Endpoint) -> QuerySet[EndpointKey]:
    """An endpoint's keys, newest first (the caller has already been scoped to the endpoint)."""
    return EndpointKey.objects.filter(endpoint=endpoint).select_related("created_by")


def _reconcile_after_commit(endpoint: Endpoint) -> None:
    from deployments.services._common import _enqueue_reconcile

    transaction.on_commit(lambda: _enqueue_reconcile(endpoint.pk))


def _locked(endpoint: Endpoint) -> Endpoint:
    return (
        Endpoint.objects.select_for_update(of=("self",))
        .select_related("target")
        .get(pk=endpoint.pk)
    )


@transaction.atomic
def endpoint_key_create(
    *, actor: Actor, endpoint: Endpoint, name: str = ""
) -> tuple[EndpointKey, str]:
    """Make a new inference key (deployers and admins); returns the key and its plain text,
    which is shown once. Old keys stay valid until revoked, so callers can move over."""
    require_role(actor, endpoint.team_id, Role.DEPLOYER)
    if not isinstance(name, str) or len(name) > 100:
        raise ApplicationError("A key name has at most 100 characters.", {"name": name})
    endpoint = _locked(endpoint)
    if EndpointKey.objects.filter(endpoint=endpoint, revoked_at__isnull=True).count() >= (
        MAX_ACTIVE_KEYS
    ):
        raise ApplicationError(
            f"{endpoint.name} already has {MAX_ACTIVE_KEYS} active keys; revoke one first.", {}
        )
    plain, prefix, digest = tokens.generate(KEY_KIND)
    key = EndpointKey.objects.create(
        endpoint=endpoint, name=name.strip(), prefix=prefix, digest=digest, created_by=actor.user
    )
    audit_record(
        actor=actor,
        action="endpoint.key.create",
        target=endpoint,
        team=endpoint.team_id,
        data={"key": prefix, "name": key.name},
    )
    _reconcile_after_commit(endpoint)
    return key, plain


@transaction.atomic
def endpoint_key_revoke(*, actor: Actor, endpoint: Endpoint, key: EndpointKey) -> EndpointKey:
    """Revoke a key (deployers and admins); the gateway refuses it after the next reconcile."""
    require_role(actor, endpoint.team_id, Role.DEPLOYER)
    if key.endpoint_id != endpoint.pk:
        raise ApplicationError("This key belongs to another endpoint.", {})
    endpoint = _locked(endpoint)
    revoked = EndpointKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    key.refresh_from_db()
    if revoked:
        audit_record(
            actor=actor,
            action="endpoint.key.revoke",
            target=endpoint,
            team=endpoint.team_id,
            data={"key": key.prefix},
        )
        _reconcile_after_commit(endpoint)
    return key


@transaction.atomic
def endpoint_require_key_set(*, actor: Actor, endpoint: Endpoint, require_key: bool) -> Endpoint:
    """Switch the key requirement on or off (deployers and admins), for any kind of target."""
    require_role(actor, endpoint.team_id, Role.DEPLOYER)
    if not isinstance(require_key, bool):
        raise ApplicationError("require_key must be true or false.", {"require_key": require_key})
    endpoint = _locked(endpoint)
    if require_key and not keys_enforceable(endpoint.target):
        raise ApplicationError(
            f"{endpoint.name}'s traffic does not pass a Modeldeck gateway (edge fleets, "
            "Kubernetes traffic: gateway-api), so no key could be checked; protect it there.",
            {"require_key": require_key},
        )
    if endpoint.require_key != require_key:
        Endpoint.objects.filter(pk=endpoint.pk).update(
            require_key=require_key, updated_at=timezone.now()
        )
        endpoint.require_key = require_key
        audit_record(
            actor=actor,
            action="endpoint.require_key",
            target=endpoint,
            team=endpoint.team_id,
            data={"require_key": require_key},
        )
        _reconcile_after_commit(endpoint)
    return endpoint


@transaction.atomic
def endpoint_gateway_token_rotate(*, actor: Actor, endpoint: Endpoint) -> Endpoint:
    """Give the endpoint's gateway a new admin token (team admins).

    The running gateway still holds the old token, so it is restarted after commit with the
    new one; its route table is pushed again by the reconcile run that follows.
    """
    require_role(actor, endpoint.team_id, Role.ADMIN)
    endpoint = _locked(endpoint)
    endpoint.gateway_token = new_gateway_token()
    Endpoint.objects.filter(pk=endpoint.pk).update(
        gateway_token=endpoint.gateway_token, updated_at=timezone.now()
    )
    audit_record(
        actor=actor, action="endpoint.gateway_token.rotate", target=endpoint, team=endpoint.team_id
    )

    def restart() -> None:
        from deployments.tasks import gateway_restart

        try:
            gateway_restart.delay(endpoint.pk)
        except Exception:  # a committed rotation must not become a 500; the admin can retry
            logger.exception("could not enqueue the gateway restart of endpoint %s", endpoint.pk)

    transaction.on_commit(restart)
    return endpoint


def gateway_restart(*, endpoint_id: int) -> str:
    """Stop the endpoint's gateway under the reconcile lease, then reconcile, which starts it
    again with the current admin token and pushes its route table ("restarted", "busy",
    "gone" or what the reconcile run answered)."""
    from deployments.reconciler import lease_acquire, lease_release, new_holder, reconcile_endpoint
    from deployments.targets import driver_for
    from deployments.targets.base import DriverError
    from deployments.targets.gateway import gateway_read_routes

    endpoint = Endpoint.objects.select_related("target").filter(pk=endpoint_id).first()
    if endpoint is None:
        return "gone"
    holder = new_holder()
    if not lease_acquire(endpoint_id=endpoint_id, holder=holder):
        return "busy"
    try:
        driver = driver_for(endpoint.target)
        gateway = driver.observe(endpoint=endpoint).gateway
        if (
            gateway is not None
            and gateway.alive
            and gateway_read_routes(admin_url=gateway.admin_url, token=endpoint.gateway_token)
            is not None
        ):
            # It already answers to the current token: a repeated delivery changes nothing.
            return "current"
        if gateway is not None:
            driver.remove_gateway(gateway=gateway)
    except DriverError as error:
        logger.warning("could not stop the gateway of endpoint %s: %s", endpoint_id, error)
    finally:
        lease_release(endpoint_id=endpoint_id, holder=holder)
    return reconcile_endpoint(endpoint_id=endpoint_id)
