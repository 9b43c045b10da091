"""Every route refuses anonymous callers, except the few that must not.

The test walks the whole URL resolver, so a route added without anyone deciding who may call it
makes this test fail.
"""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.actor import Actor
from deployments.models import Environment, Target, TargetKind
from edge import services as edge_services
from edge.models import EdgeDevice, EnrollmentCode
from monitoring.models import PredictionRecord
from tests.security.routes import all_routes

# Routes that answer anonymous callers on purpose.
PUBLIC_ROUTES = {
    "/healthz",
    "/accounts/login/",
    "/admin/login/",
    # Signing out an anonymous session changes nothing and redirects to the login page.
    "/accounts/logout/",
    "/admin/logout/",
    # A new edge device has no credentials yet: it enrolls with the one-time code a deployer
    # made for its fleet, checked inside the view (a bad code is a 400; see
    # test_enrollment_refuses_bad_codes). Throttled per address.
    "/api/v1/edge/enroll/",
    # Single sign-on: starts at the provider and comes back with a one-time code, checked
    # against the provider (tests/accounts/test_oidc.py); 404 while SSO is not configured.
    "/oidc/authenticate/",
    "/oidc/callback/",
}
# Routes that take a machine's token checked inside the view (the gateway's token for the
# prediction log): a wrong method is 405 before anything is read, the right one is 401 without
# the token (test_machine_token_routes_answer_401_anonymously).
TOKEN_IN_VIEW = {"/api/v1/endpoints/x/predictions/": "post"}
PUBLIC_PREFIXES = ("/static/",)


def _is_login_redirect(response) -> bool:
    if response.status_code not in (301, 302):
        return False
    location = response["Location"]
    return location.startswith(("/accounts/login/", "/admin/login/"))


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["get", "post"])
def test_every_route_refuses_anonymous_callers(client, method):
    routes = all_routes()
    assert len(routes) > 20, routes  # the walk found the app's routes
    unclassified = []
    for route in routes:
        if route in PUBLIC_ROUTES or route.startswith(PUBLIC_PREFIXES):
            continue
        response = getattr(client, method)(route)
        if response.status_code in (401, 403) or _is_login_redirect(response):
            continue
        wrong_method = route in TOKEN_IN_VIEW and method != TOKEN_IN_VIEW[route]
        if wrong_method and response.status_code == 405:
            continue
        unclassified.append(f"{method.upper()} {route} -> {response.status_code}")
    assert unclassified == []


@pytest.mark.django_db
def test_public_routes_answer_anonymous_callers(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/accounts/login/").status_code == 200
    assert client.get("/admin/login/").status_code == 200


@pytest.fixture
def fleet(team):
    return Target.objects.create(
        team=team, name="anon-fleet", kind=TargetKind.EDGE, environment=Environment.DEV
    )


@pytest.mark.django_db
def test_enrollment_refuses_bad_codes(fleet):
    """Unknown, used and expired codes (and no code at all) never enroll a device."""
    system = Actor.system("tests")
    _used, used = edge_services.enrollment_code_create(actor=system, target=fleet)
    edge_services.device_enroll(code=used, name="first")
    expired_row, expired = edge_services.enrollment_code_create(actor=system, target=fleet)
    EnrollmentCode.objects.filter(pk=expired_row.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    _valid, valid = edge_services.enrollment_code_create(actor=system, target=fleet)
    client = APIClient()
    bodies = [
        {"code": "enr_" + "x" * 32, "name": "cam"},
        {"code": used, "name": "cam"},
        {"code": expired, "name": "cam"},
        {"code": valid[:-1], "name": "cam"},
        {"code": valid + "x", "name": "cam"},
        {"code": "", "name": "cam"},
        {"code": None, "name": "cam"},
        {"code": [valid], "name": "cam"},
        {"name": "cam"},
        {},
    ]
    for body in bodies:
        response = client.post("/api/v1/edge/enroll/", body, format="json")
        assert response.status_code in (400, 401), (body, response.status_code)
        assert "token" not in response.json()
    assert client.post("/api/v1/edge/enroll/", "code", content_type="text/plain").status_code in (
        400,
        401,
        415,
    )
    assert list(EdgeDevice.objects.values_list("name", flat=True)) == ["first"]
    # The valid code still works once (the refusals did not burn it).
    assert (
        client.post("/api/v1/edge/enroll/", {"code": valid, "name": "cam"}, "json").status_code
        == 201
    )


@pytest.mark.django_db
def test_machine_token_routes_answer_401_anonymously(world):
    """Device-token and gateway-token routes: no token, a made-up one, or another endpoint's
    gateway token is 401 for a real name as for an unknown one (nothing to probe), and nothing
    is stored."""
    version_id = world.values[("artifacts", "version_id")]
    anonymous = APIClient()
    forged = APIClient()
    forged.credentials(HTTP_AUTHORIZATION="Bearer edg_aaaaaaaaaaaa_" + "b" * 43)
    gateway = APIClient()
    gateway.credentials(HTTP_AUTHORIZATION=f"Bearer {world.fleet_endpoint.gateway_token}")
    before = PredictionRecord.objects.count()
    record = {"request_id": "anon-1", "version": "secret-model:1", "role": "primary"}
    for client in (anonymous, forged, gateway):
        assert client.get("/api/v1/edge/desired/").status_code == 401
        assert client.post("/api/v1/edge/heartbeat/", {"state": {}}, "json").status_code == 401
        assert client.get(f"/api/v1/edge/artifacts/{version_id}/").status_code == 401
        for name in (world.endpoint.name, "no-such-endpoint"):
            response = client.post(
                f"/api/v1/endpoints/{name}/predictions/", {"records": [record]}, format="json"
            )
            assert response.status_code == 401, (name, response.status_code)
    assert PredictionRecord.objects.count() == before
    world.device.refresh_from_db()
    assert world.device.status_reason != "forged"
