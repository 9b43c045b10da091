"""No secret derives from SECRET_KEY: gateway admin tokens and device manifest keys are random
per object, survive a change of SECRET_KEY, cannot be computed from the source, and rotate."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from django.core.exceptions import PermissionDenied
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts.models import AuditEvent, Role
from deployments import access
from deployments.models import Endpoint, Environment, Target, TargetKind
from deployments.services import endpoint_create
from edge import services as edge
from tests.conftest import actor_for
from tests.deployments.conftest import make_version
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

FIXTURES = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
# What the source used to derive them with: anyone who reads it could compute these.
DERIVATIONS = [
    lambda key, obj: hmac.new(key, f"modeldeck-gateway:{obj.pk}".encode(), hashlib.sha256),
    lambda key, obj: hmac.new(
        key, f"modeldeck-edge-device:{obj.pk}:{getattr(obj, 'token_prefix', '')}".encode(),
        hashlib.sha256,
    ),
]  # fmt: skip
secret_keys = st.text(min_size=1, max_size=80).filter(lambda text: text.strip())


def computable(secret: str | bytes, obj, secret_key: str) -> bool:
    """Whether `secret` equals one of the known derivations from SECRET_KEY."""
    candidates = set()
    for derive in DERIVATIONS:
        digest = derive(secret_key.encode(), obj)
        candidates |= {digest.hexdigest(), digest.digest().hex(), digest.hexdigest()[:16]}
    value = secret.hex() if isinstance(secret, bytes) else secret
    return value in candidates


@pytest.fixture
def endpoints(team, adder_model, admin):
    make_version(adder_model, number=1)
    target = Target.objects.create(
        team=team, name="local-dev", kind=TargetKind.LOCAL, environment=Environment.DEV
    )
    return [
        endpoint_create(actor=admin, name=f"e{n}", target=target, version="adder:1")
        for n in range(3)
    ]


def member(team, role: str, username: str):
    return MembershipFactory(user=UserFactory(username=username), team=team, role=role).user


@pytest.fixture
def admin(admin_member):
    return actor_for(admin_member)


@settings(max_examples=25, suppress_health_check=FIXTURES, deadline=None)
@given(secret_key=secret_keys)
def test_gateway_tokens_are_random_per_endpoint_and_independent_of_secret_key(
    endpoints, secret_key
):
    from django.test import override_settings

    rows = list(Endpoint.objects.order_by("pk"))
    before = {row.pk: row.gateway_token for row in rows}
    with override_settings(SECRET_KEY=secret_key):
        for row in Endpoint.objects.order_by("pk"):
            assert row.gateway_token == before[row.pk]
            assert not computable(row.gateway_token, row, secret_key)
    assert len(set(before.values())) == len(rows) == 3
    assert all(len(token) >= 43 for token in before.values())


@pytest.fixture
def fleet_device(team, admin):
    fleet = Target.objects.create(
        team=team, name="cams", kind=TargetKind.EDGE, environment=Environment.DEV
    )
    devices = []
    for name in ("cam-1", "cam-2"):
        _code, plain = edge.enrollment_code_create(actor=admin, target=fleet)
        device, token, key = edge.device_enroll(code=plain, name=name)
        devices.append((device, token, key))
    return admin, devices


@settings(max_examples=25, suppress_health_check=FIXTURES, deadline=None)
@given(secret_key=secret_keys)
def test_device_manifest_keys_are_random_and_independent_of_secret_key(fleet_device, secret_key):
    from django.test import override_settings

    _admin, devices = fleet_device
    keys = {device.pk: key for device, _token, key in devices}
    assert len(set(keys.values())) == 2
    with override_settings(SECRET_KEY=secret_key):
        for device, _token, _key in devices:
            device.refresh_from_db()
            assert device.signing_key.hex() == keys[device.pk]
            assert not computable(device.signing_key, device, secret_key)


def test_rotating_a_device_replaces_its_token_and_key_and_the_old_token_stops(fleet_device):
    admin, devices = fleet_device
    device, token, key = devices[0]
    assert edge.device_authenticate(token) == device
    device, new_token, new_key = edge.device_credentials_rotate(actor=admin, device=device)
    assert new_token != token and new_key != key
    assert device.signing_key.hex() == new_key
    assert edge.device_authenticate(token) is None
    assert edge.device_authenticate(new_token) == device
    assert AuditEvent.objects.filter(action="edge.device.rotate", object_id=str(device.pk)).count()


def test_rotating_a_gateway_token_needs_an_admin_and_changes_only_that_endpoint(
    endpoints, team, admin, django_capture_on_commit_callbacks
):
    first, second = Endpoint.objects.order_by("pk")[:2]
    tokens = {first.pk: first.gateway_token, second.pk: second.gateway_token}
    deployer = actor_for(member(team, Role.DEPLOYER, "dee"))
    with pytest.raises(PermissionDenied):
        access.endpoint_gateway_token_rotate(actor=deployer, endpoint=first)
    assert Endpoint.objects.get(pk=first.pk).gateway_token == tokens[first.pk]
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        access.endpoint_gateway_token_rotate(actor=admin, endpoint=first)
    assert len(callbacks) == 1  # the gateway restart
    assert Endpoint.objects.get(pk=first.pk).gateway_token != tokens[first.pk]
    assert Endpoint.objects.get(pk=second.pk).gateway_token == tokens[second.pk]
    assert AuditEvent.objects.filter(action="endpoint.gateway_token.rotate").count() == 1


def test_the_admin_rotates_device_credentials_and_shows_them_once_on_a_page(
    fleet_device, admin_member
):
    from django.test import Client

    admin_member.is_staff = admin_member.is_superuser = True
    admin_member.save()
    client = Client()
    client.force_login(admin_member)
    _admin, devices = fleet_device
    device, token, _key = devices[0]
    response = client.post(
        "/admin/edge/edgedevice/",
        {"action": "rotate_credentials", "_selected_action": [device.pk]},
    )
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    device.refresh_from_db()
    page = response.content.decode()
    assert device.manifest_key in page
    assert edge.device_authenticate(token) is None
    assert device.manifest_key not in str(response.cookies.get("messages", ""))
    assert (
        device.manifest_key
        not in client.get(f"/admin/edge/edgedevice/{device.pk}/change/").content.decode()
    )


def test_the_admin_rotates_gateway_tokens_without_showing_them(endpoints, admin_member):
    from django.test import Client

    admin_member.is_staff = admin_member.is_superuser = True
    admin_member.save()
    client = Client()
    client.force_login(admin_member)
    endpoint = endpoints[0]
    before = endpoint.gateway_token
    assert (
        before
        not in client.get(f"/admin/deployments/endpoint/{endpoint.pk}/change/").content.decode()
    )
    client.post(
        "/admin/deployments/endpoint/",
        {"action": "rotate_gateway_token", "_selected_action": [endpoint.pk]},
    )
    endpoint.refresh_from_db()
    assert endpoint.gateway_token != before
