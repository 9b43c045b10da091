"""Who may touch what, generated from the route list.

- Another team's admin gets 404 from every route that names one of our objects, with every
  method, on pages and on the API, and nothing changes.
- List routes never show another team's objects.
- A role × route matrix: each state-changing route has a declared minimum role; every lower role
  gets 403 and changes nothing, every role at or above it gets through.
"""

from __future__ import annotations

import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from rest_framework.test import APIClient

from accounts.actor import Actor
from accounts.models import Membership, Role
from deployments.models import Environment, Target, TargetKind
from edge import services as edge_services
from edge.models import EdgeRollout, RolloutStatus
from tests.conftest import token_client
from tests.deployments.conftest import onnx_adder
from tests.factories import MembershipFactory, UserFactory
from tests.security.world import (
    BATCH_CSV,
    World,
    changed_tables,
    object_routes,
    project_routes,
    snapshot,
)

pytestmark = pytest.mark.django_db

WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
SECRETS = (
    "secret-model",
    "secret-endpoint",
    "secret-target",
    "secret-fleet",
    "secret-device",
    "experiment_name",
)
# Routes that take no user credentials at all: edge devices authenticate with their device
# token, a gateway with its endpoint's gateway token. A user's token or session gets 401/403
# there, the same answer as for an object that does not exist (checked against `nowhere`).
DEVICE_OR_GATEWAY_ROUTES = {
    "/api/v1/edge/artifacts/{version_id}/",
    "/api/v1/edge/desired/",
    "/api/v1/edge/heartbeat/",
    "/api/v1/endpoints/{name}/predictions/",
}


def test_every_route_parameter_is_known(world):
    """A route whose parameter the walk cannot fill would escape the access tests below."""
    unknown = sorted(
        {
            f"{route.template} {key}"
            for route in project_routes()
            for key in route.parameters
            if key not in world.values
        }
    )
    assert unknown == []
    assert len(object_routes()) > 40


def _batch_pages() -> str:
    """Where the batch job pages live: they move from /models/_batch/ to /batch-jobs/ (next to
    /api/v1/batch-jobs/); follow the URLconf rather than pin either."""
    moved = any(route.template.startswith("/batch-jobs/") for route in project_routes())
    return "/batch-jobs" if moved else "/models/_batch"


BATCH = _batch_pages()


# --- request bodies that would succeed for a permitted caller ---------------------------------


def page_body(template: str, world: World) -> dict:
    """Valid form data for every page route that takes a POST."""
    reference = f"{world.model.name}:{world.version.number}"
    bodies = {
        "/accounts/tokens/": {"team": world.team.pk, "name": "ci", "days": 30},
        "/models/_new/": {"team": world.team.name, "name": "new-model", "tags": ""},
        "/models/{name}/upload/": {
            "file": SimpleUploadedFile("m.onnx", onnx_adder(5), "application/octet-stream")
        },
        "/models/{name}/aliases/": {"name": "staging", "version": 2, "reason": "r"},
        "/models/{name}/versions/{number}/approve/": {"decision": "rejected", "comment": "no"},
        "/endpoints/new/": {
            "name": "new-endpoint",
            "target": world.target.name,
            "version": reference,
        },
        "/endpoints/{name}/deploy/": {"version": reference, "weight": 10},
        "/endpoints/{name}/require-key/": {"require_key": "true"},
        "/endpoints/{name}/traffic/": {
            "version_0": f"{world.model.name}:1",
            "weight_0": 50,
            "role_0": "primary",
            "version_1": reference,
            "weight_1": 50,
            "role_1": "candidate",
        },
        "/endpoints/{name}/rollback/": {"release": 1},
        "/endpoints/{name}/scale/": {
            "version": f"{world.model.name}:1",
            "replicas": 2,
            "confirmed": "on",
        },
        "/targets/": {
            "team": world.team.name,
            "name": "new-target",
            "kind": "local",
            "environment": "dev",
            "config": "{}",
        },
        # firsthour: a fleet's settings and description (its environment stays).
        "/targets/{name}/edit/": {
            "environment": world.fleet.environment,
            "config": "{}",
            "description": "changed",
        },
        "/endpoints/{name}/alerts/rules/": {
            "name": "slow",
            "metric": "error_rate",
            "comparator": "gt",
            "threshold": "0.5",
            "window_minutes": 5,
            "for_minutes": 0,
        },
        "/webhooks/new/": {
            "team": world.team.pk,
            "name": "hook",
            "url": "https://hooks.example.com/x",
            "events": ["alert.opened"],
        },
        "/fleet/{name}/codes/": {"labels": "site=b", "hours": 24},
        # The world's rollout moves the fleet to version 2; going back to 1 is a new rollout.
        "/fleet/{name}/rollouts/": {
            "version": f"{world.model.name}:1",
            "waves": "100",
            "wave_interval_seconds": 0,
            "max_failure_percent": 20,
            "min_reported": 1,
        },
        f"{BATCH}/new/": {
            "version": f"{world.model.name}:1",
            "file": SimpleUploadedFile("in.csv", BATCH_CSV, "text/csv"),
        },
        "/models/{name}/versions/{number}/optimize/": {"method": "int8"},
        "/experiments/new/": {
            "endpoint": world.endpoint.name,
            "name": "form-experiment",
            "control": f"{world.model.name}:1",
            "treatment": reference,
            "metric": "accuracy",
            "treatment_percent": 50,
            "alpha": 0.05,
            "power": 0.8,
            "minimum_effect": 0.05,
        },
        "/endpoints/{name}/guardrails/policy/": {
            "criteria-TOTAL_FORMS": 1,
            "criteria-INITIAL_FORMS": 1,
            "criteria-MIN_NUM_FORMS": 0,
            "criteria-MAX_NUM_FORMS": 10,
            "criteria-0-metric": "error_rate",
            "criteria-0-threshold": 0.1,
            "failure_limit": 1,
            "on_inconclusive": "pause",
            "scope": "always",
            "is_enabled": "on",
        },
    }
    return bodies.get(template, {})


def api_body(method: str, template: str, world: World) -> tuple[dict, str]:
    """(data, format) that a permitted caller could send to an API route."""
    reference = f"{world.model.name}:{world.version.number}"
    if template == "/api/v1/models/{model_name}/versions/" and method == "POST":
        return {"file": SimpleUploadedFile("m.onnx", onnx_adder(5))}, "multipart"
    if template == "/api/v1/batch-jobs/" and method == "POST":
        upload = SimpleUploadedFile("in.csv", BATCH_CSV, "text/csv")
        return {"version": f"{world.model.name}:1", "file": upload}, "multipart"
    if template == "/api/v1/endpoints/{name}/feedback/" and method == "POST":
        # req-2 is logged and has no label yet (see world.py).
        return [{"request_id": "req-2", "label": "cat"}], "json"
    bodies = {
        ("POST", "/api/v1/models/"): {"name": "new-model", "description": "d", "tags": {}},
        ("PATCH", "/api/v1/models/{name}/"): {"description": "changed"},
        ("PUT", "/api/v1/models/{name}/"): {"description": "changed", "tags": {}},
        ("PUT", "/api/v1/endpoints/{name}/"): {"require_key": True},
        ("POST", "/api/v1/models/{model_name}/versions/{number}/approve/"): {
            "decision": "rejected",
            "comment": "no",
        },
        ("PUT", "/api/v1/models/{model_name}/aliases/{alias}/"): {"version": 2},
        ("POST", "/api/v1/targets/"): {
            "name": "new-target",
            "kind": "local",
            "environment": "dev",
            "config": {},
            "team": world.team.name,
        },
        ("POST", "/api/v1/endpoints/"): {
            "name": "new-endpoint",
            "target": world.target.name,
            "version": reference,
        },
        ("PATCH", "/api/v1/targets/{name}/"): {"description": "changed"},
        ("PUT", "/api/v1/targets/{name}/"): {
            "environment": world.fleet.environment,
            "config": {},
            "description": "changed",
        },
        ("POST", "/api/v1/endpoints/{name}/deploy/"): {"version": reference, "weight": 10},
        ("POST", "/api/v1/endpoints/{name}/traffic/"): {
            "variants": [
                {"version": f"{world.model.name}:1", "weight": 50, "role": "primary"},
                {"version": reference, "weight": 50, "role": "candidate"},
            ]
        },
        ("POST", "/api/v1/endpoints/{name}/rollback/"): {"release": 1},
        ("POST", "/api/v1/endpoints/{name}/scale/"): {
            "version": f"{world.model.name}:1",
            "replicas": 2,
        },
        ("POST", "/api/v1/targets/{name}/enrollment-codes/"): {"labels": {"site": "b"}},
        ("POST", "/api/v1/targets/{name}/rollouts/"): {
            "version": f"{world.model.name}:1",
            "waves": [{"percent": 100}],
        },
        ("POST", "/api/v1/models/{model_name}/versions/{number}/optimize/"): {"method": "int8"},
        ("PUT", "/api/v1/endpoints/{name}/prediction-log/"): {"input_sample_percent": 50},
        ("PUT", "/api/v1/endpoints/{name}/rollback-policy/"): {
            "criteria": [{"metric": "error_rate", "threshold": 0.3}],
        },
        ("POST", "/api/v1/experiments/"): {
            "endpoint": world.endpoint.name,
            "name": "second",
            "control": f"{world.model.name}:1",
            "treatment": reference,
            "metric": "accuracy",
            "minimum_effect": 0.05,
        },
        # Bodies that would be stored if the route took the caller's credentials.
        ("POST", "/api/v1/endpoints/{name}/predictions/"): {
            "records": [
                {
                    "request_id": "req-9",
                    "version": reference,
                    "role": "primary",
                    "time": time.time(),
                    "status": 200,
                }
            ]
        },
        ("POST", "/api/v1/edge/heartbeat/"): {
            "agent_version": "x",
            "state": {"health": "failing", "reason": "forged"},
            "summaries": [],
        },
        ("POST", "/api/v1/edge/enroll/"): {"code": "enr_" + "x" * 32, "name": "new-device"},
    }
    return bodies.get((method, template), {}), "json"


def nowhere(world: World) -> dict:
    """Route values that name no object at all."""
    return {
        key: ("model" if key == ("files", "kind") else 999_999 if isinstance(v, int) else "nowhere")
        for key, v in world.values.items()
    }


def call(client, method: str, route, world: World, values: dict | None = None):
    path = route.fill(values or world.values)
    if route.template.endswith("/compare/"):
        path += "?a=1&b=2"
    if route.is_api:
        data, fmt = api_body(method, route.template, world)
        return getattr(client, method.lower())(path, data, format=fmt)
    if method == "POST":
        return client.post(path, page_body(route.template, world))
    return client.generic(method, path)


def methods_of(route) -> list[str]:
    if route.is_api:
        return sorted(route.methods) or ["GET", *WRITE_METHODS]
    return ["GET", "POST"]


# --- cross-team -------------------------------------------------------------------------------


def _outsider_clients(outsider, other_team):
    page = Client()
    page.force_login(outsider)
    return page, token_client(outsider, other_team)


def test_another_team_gets_404_from_every_object_route_and_nothing_changes(
    world, outsider, other_team
):
    page_client, api_client = _outsider_clients(outsider, other_team)
    routes = object_routes()
    before = snapshot()
    leaks = []
    for route in routes:
        client = api_client if route.is_api else page_client
        for method in methods_of(route):
            status = call(client, method, route, world).status_code
            # The answer must be the one a name that exists nowhere gets: no existence oracle.
            missing = call(client, method, route, world, values=nowhere(world)).status_code
            # 401/403 only from routes that refuse user credentials outright (edge device and
            # gateway routes), and the same answer a missing object gets.
            refusals = (
                (401, 403, 404, 405)
                if route.template in DEVICE_OR_GATEWAY_ROUTES
                else (
                    404,
                    405,
                )
            )
            if status not in refusals or status != missing:
                leaks.append(f"{method} {route.template} -> {status} (missing: {missing})")
    assert leaks == []
    assert changed_tables(before, snapshot()) == []


def test_another_teams_session_cannot_use_the_api_on_our_objects(world, outsider):
    """The same walk with a browser session on the API (the other authentication path)."""
    client = APIClient()
    client.force_authenticate(outsider)
    before = snapshot()
    leaks = []
    for route in (r for r in object_routes() if r.is_api):
        for method in methods_of(route):
            status = call(client, method, route, world).status_code
            if route.template in DEVICE_OR_GATEWAY_ROUTES:
                # No session is a device or a gateway: refused, exactly as for a missing object.
                missing = call(client, method, route, world, values=nowhere(world)).status_code
                if status not in (401, 403, 405) or status != missing:
                    leaks.append(f"{method} {route.template} -> {status} (missing: {missing})")
            elif status not in (404, 405):
                leaks.append(f"{method} {route.template} -> {status}")
    assert leaks == []
    assert changed_tables(before, snapshot()) == []


def test_list_routes_never_show_another_teams_objects(world, outsider, other_team):
    page_client, api_client = _outsider_clients(outsider, other_team)
    shown = []
    for route in project_routes():
        if route.parameters or route.template in ("/accounts/logout/", "/api/schema/"):
            continue
        client = api_client if route.is_api else page_client
        response = client.get(route.template)
        body = b"".join(response) if response.streaming else response.content
        for secret in SECRETS:
            if secret.encode() in body:
                shown.append(f"GET {route.template} shows {secret}")
    assert shown == []


def test_the_walk_would_see_a_leak(world, admin_member, team):
    """The same checks against the owning team's admin do see the objects (so a 404 above is
    the access check, not a wrong URL)."""
    client = token_client(admin_member, team)
    ok = [
        r
        for r in object_routes()
        if r.is_api and "GET" in r.methods and r.template not in DEVICE_OR_GATEWAY_ROUTES
    ]
    statuses = {r.template: call(client, "GET", r, world).status_code for r in ok}
    # Manifests exist only for Kubernetes targets: the world's local target answers 400; the
    # world's batch job is still pending, so it has no result yet (409).
    assert {t: s for t, s in statuses.items() if s != 200} == {
        "/api/v1/endpoints/{name}/releases/{number}/manifests/": 400,
        "/api/v1/batch-jobs/{pk}/result/": 409,
    }
    # The device routes answer the world's own device.
    device = APIClient()
    device.credentials(HTTP_AUTHORIZATION=f"Bearer {world.device_token}")
    assert device.get("/api/v1/edge/desired/").status_code == 200
    route = next(r for r in object_routes() if r.template == "/api/v1/edge/artifacts/{version_id}/")
    response = device.get(route.fill(world.values))
    assert response.status_code == 200
    assert b"".join(response.streaming_content)
    page = Client()
    page.force_login(admin_member)
    assert b"secret-model" in page.get("/models/").content
    assert b"secret-fleet" in page.get("/fleet/").content
    assert b"secret-device" in page.get(f"/fleet/{world.fleet.name}/").content


def _other_teams_device(other_team):
    fleet = Target.objects.create(
        team=other_team, name="other-fleet", kind=TargetKind.EDGE, environment=Environment.DEV
    )
    _code, plain = edge_services.enrollment_code_create(actor=Actor.system("tests"), target=fleet)
    _device, token, _key = edge_services.device_enroll(code=plain, name="other-device")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_another_teams_device_cannot_download_our_models_or_see_our_fleet(world, other_team):
    device = _other_teams_device(other_team)
    ours = device.get(f"/api/v1/edge/artifacts/{world.values[('artifacts', 'version_id')]}/")
    missing = device.get("/api/v1/edge/artifacts/999999/")
    assert ours.status_code == missing.status_code == 404
    desired = device.get("/api/v1/edge/desired/")
    assert desired.status_code == 200
    for secret in (*SECRETS, world.model.name):
        assert secret.encode() not in desired.content
    # A device's token is not a user's: the people's fleet API does not take it.
    before = snapshot()
    for path in (
        f"/api/v1/targets/{world.fleet.name}/devices/",
        f"/api/v1/edge/rollouts/{world.rollout.pk}/",
    ):
        assert device.get(path).status_code in (401, 403)
    assert device.post(f"/api/v1/edge/rollouts/{world.rollout.pk}/cancel/").status_code in (
        401,
        403,
    )
    assert changed_tables(before, snapshot()) == []


# --- role × route matrix ----------------------------------------------------------------------

ROLES = [Role.VIEWER, Role.SCIENTIST, Role.DEPLOYER, Role.ADMIN]
OWNER_ONLY = "owner"  # the world owner's own object (tokens): other members get 404
STAFF_ONLY = "staff"  # installation admins only (is_staff), whatever the team role
NOT_ALLOWED = "405"  # the router lists the method but the view takes it from nobody
# Machine routes: no team role opens them. A device's token (edge heartbeat) or the endpoint's
# gateway token (prediction log ingest) is the only credential; every user gets 401.
MACHINE_ONLY = "machine"
# Enrollment is anonymous by design (a device has no credentials yet): the one-time code is the
# credential, whatever the caller's role; a wrong code is a 400 for everyone.
CODE_ONLY = "code"
# Page actions whose service refuses with ApplicationError(status=403): HTML views turn domain
# errors into a message (DESIGN.md), so the page redirects back with it instead of a bare 403.
MESSAGE_DENIALS = {"/models/{name}/aliases/{alias}/delete/"}

# The minimum role of every state-changing route (the dev target needs scientist to deploy; the
# world's version 2 is approved, so archiving it needs a deployer; `production` is protected).
MINIMUM_ROLE = {
    ("POST", "/experiments/new/"): Role.DEPLOYER,
    ("POST", "/endpoints/{name}/guardrails/policy/"): Role.DEPLOYER,
    ("POST", "/accounts/tokens/"): Role.VIEWER,
    ("POST", "/accounts/tokens/{pk}/revoke/"): OWNER_ONLY,
    ("POST", "/models/_new/"): Role.SCIENTIST,
    ("POST", "/models/{name}/archive/"): Role.DEPLOYER,
    ("POST", "/models/{name}/upload/"): Role.SCIENTIST,
    ("POST", "/models/{name}/aliases/"): Role.SCIENTIST,
    ("POST", "/models/{name}/aliases/{alias}/delete/"): Role.DEPLOYER,
    ("POST", "/models/{name}/versions/{number}/approve/"): Role.DEPLOYER,
    ("POST", "/models/{name}/versions/{number}/archive/"): Role.DEPLOYER,
    ("POST", "/endpoints/new/"): Role.SCIENTIST,
    ("POST", "/endpoints/{name}/deploy/"): Role.SCIENTIST,
    ("POST", "/endpoints/{name}/traffic/"): Role.SCIENTIST,
    ("POST", "/endpoints/{name}/promote/"): Role.SCIENTIST,
    ("POST", "/endpoints/{name}/rollback/"): Role.SCIENTIST,
    ("POST", "/endpoints/{name}/stop/"): Role.SCIENTIST,
    ("POST", "/endpoints/{name}/scale/"): Role.DEPLOYER,
    ("POST", "/targets/"): Role.ADMIN,
    ("POST", "/endpoints/{name}/alerts/rules/"): Role.DEPLOYER,
    ("POST", "/endpoints/{name}/alerts/rules/{pk}/delete/"): Role.DEPLOYER,
    ("POST", "/endpoints/{name}/alerts/rules/{pk}/toggle/"): Role.DEPLOYER,
    ("POST", "/webhooks/new/"): Role.DEPLOYER,
    ("POST", "/webhooks/{pk}/delete/"): Role.DEPLOYER,
    ("POST", "/webhooks/{pk}/rotate/"): Role.DEPLOYER,
    ("POST", "/webhooks/{pk}/ping/"): Role.DEPLOYER,
    ("POST", "/webhooks/{pk}/allow-host/"): STAFF_ONLY,
    ("POST", "/webhooks/{pk}/disallow-host/"): STAFF_ONLY,
    ("POST", "/api/v1/models/"): Role.SCIENTIST,
    ("PATCH", "/api/v1/models/{name}/"): Role.SCIENTIST,
    ("PUT", "/api/v1/models/{name}/"): NOT_ALLOWED,
    ("DELETE", "/api/v1/models/{name}/"): Role.DEPLOYER,
    ("POST", "/api/v1/models/{model_name}/versions/"): Role.SCIENTIST,
    ("POST", "/api/v1/models/{model_name}/versions/{number}/approve/"): Role.DEPLOYER,
    ("PUT", "/api/v1/models/{model_name}/aliases/{alias}/"): Role.DEPLOYER,
    ("DELETE", "/api/v1/models/{model_name}/aliases/{alias}/"): Role.DEPLOYER,
    ("POST", "/api/v1/targets/"): Role.ADMIN,
    ("POST", "/api/v1/endpoints/"): Role.SCIENTIST,
    ("POST", "/api/v1/endpoints/{name}/deploy/"): Role.SCIENTIST,
    ("POST", "/api/v1/endpoints/{name}/traffic/"): Role.SCIENTIST,
    ("POST", "/api/v1/endpoints/{name}/promote/"): Role.SCIENTIST,
    ("POST", "/api/v1/endpoints/{name}/rollback/"): Role.SCIENTIST,
    ("POST", "/api/v1/endpoints/{name}/stop/"): Role.SCIENTIST,
    ("POST", "/api/v1/endpoints/{name}/scale/"): Role.DEPLOYER,
    ("POST", "/api/v1/endpoints/{name}/keys/"): Role.DEPLOYER,
    ("DELETE", "/api/v1/endpoints/{name}/keys/{key_id}/"): Role.DEPLOYER,
    ("PUT", "/api/v1/endpoints/{name}/"): Role.DEPLOYER,
    ("POST", "/endpoints/{name}/keys/"): Role.DEPLOYER,
    ("POST", "/endpoints/{name}/keys/{key_id}/revoke/"): Role.DEPLOYER,
    ("POST", "/endpoints/{name}/require-key/"): Role.DEPLOYER,
    # Edge fleets (edge/services/). The world's fleet is a production target, so
    # a rollout needs a deployer (a scientist may roll out on dev/staging fleets: see
    # test_a_scientist_may_roll_out_on_a_dev_fleet_only); codes, revoking, cancel and retry
    # always need a deployer.
    ("POST", "/fleet/{name}/codes/"): Role.DEPLOYER,
    ("POST", "/fleet/{name}/rollouts/"): Role.DEPLOYER,
    ("POST", "/fleet/{name}/rollouts/{rollout_id}/{action}/"): Role.DEPLOYER,
    ("POST", "/fleet/{name}/devices/{device}/revoke/"): Role.DEPLOYER,
    ("POST", "/api/v1/targets/{name}/enrollment-codes/"): Role.DEPLOYER,
    ("POST", "/api/v1/targets/{name}/devices/{device}/revoke/"): Role.DEPLOYER,
    ("POST", "/api/v1/targets/{name}/rollouts/"): Role.DEPLOYER,
    ("POST", "/api/v1/edge/rollouts/{rollout_id}/cancel/"): Role.DEPLOYER,
    ("POST", "/api/v1/edge/rollouts/{rollout_id}/retry/"): Role.DEPLOYER,
    ("POST", "/api/v1/edge/heartbeat/"): MACHINE_ONLY,
    ("POST", "/api/v1/edge/enroll/"): CODE_ONLY,
    # Batch jobs and optimization (registry/services/batch_jobs.py, optimizations.py): scientists.
    ("POST", f"{BATCH}/new/"): Role.SCIENTIST,
    ("POST", BATCH + "/{job_id}/cancel/"): Role.SCIENTIST,
    ("POST", "/models/{name}/versions/{number}/optimize/"): Role.SCIENTIST,
    ("POST", "/api/v1/batch-jobs/"): Role.SCIENTIST,
    ("POST", "/api/v1/batch-jobs/{pk}/cancel/"): Role.SCIENTIST,
    ("POST", "/api/v1/models/{model_name}/versions/{number}/optimize/"): Role.SCIENTIST,
    # Experiments split live traffic: deployers (monitoring/services/experiments.py).
    ("POST", "/experiments/{pk}/start/"): Role.DEPLOYER,
    ("POST", "/experiments/{pk}/stop/"): Role.DEPLOYER,
    ("POST", "/api/v1/experiments/"): Role.DEPLOYER,
    ("POST", "/api/v1/experiments/{pk}/start/"): Role.DEPLOYER,
    ("POST", "/api/v1/experiments/{pk}/stop/"): Role.DEPLOYER,
    # Rollback policies and the input log share: deployers; labels (feedback): scientists;
    # prediction records come from the endpoint's gateway only
    # (monitoring/services/rollback_policies.py, monitoring/services/feedback.py).
    ("PUT", "/api/v1/endpoints/{name}/rollback-policy/"): Role.DEPLOYER,
    ("DELETE", "/api/v1/endpoints/{name}/rollback-policy/"): Role.DEPLOYER,
    ("PUT", "/api/v1/endpoints/{name}/prediction-log/"): Role.DEPLOYER,
    ("POST", "/api/v1/endpoints/{name}/feedback/"): Role.SCIENTIST,
    ("POST", "/api/v1/endpoints/{name}/predictions/"): MACHINE_ONLY,
    # firsthour: targets are changed and deleted by team admins.
    ("PUT", "/api/v1/targets/{name}/"): Role.ADMIN,
    ("PATCH", "/api/v1/targets/{name}/"): Role.ADMIN,
    ("DELETE", "/api/v1/targets/{name}/"): Role.ADMIN,
    ("POST", "/targets/{name}/edit/"): Role.ADMIN,
    ("POST", "/targets/{name}/delete/"): Role.ADMIN,
}


def _stop_rollout(world: World) -> None:
    """Retrying needs a rollout that stopped: cancel the world's (as the system would)."""
    edge_services.edge_rollout_cancel(actor=Actor.system("tests"), rollout=world.rollout)


def _empty_fleet(world: World) -> None:
    """A target is deleted only when nothing uses it: remove the fleet's endpoint and devices
    (as their owners would) so that a permitted delete can happen."""
    from edge.models import EdgeDevice, EdgeRollout

    EdgeRollout.objects.filter(target=world.fleet).delete()
    world.fleet_endpoint.delete()
    EdgeDevice.objects.filter(target=world.fleet).delete()


# What a route needs in place before the permitted call can change anything.
PREPARE = {
    "/api/v1/edge/rollouts/{rollout_id}/retry/": _stop_rollout,
    "/api/v1/targets/{name}/": _empty_fleet,
    "/targets/{name}/delete/": _empty_fleet,
}
# POSTs that change nothing of the team's (or nothing at all); the single sign-on views answer
# GET only (a team's memberships change there only as the operator's claim map says).
NOT_STATE_CHANGING = {
    "/accounts/login/",
    "/accounts/logout/",
    "/oidc/authenticate/",
    "/oidc/callback/",
}
# Page forms that list only the teams where the user has the role: a lower role sees the form
# again with an error (200) rather than a 403; the matrix still requires that nothing changed.
TEAM_CHOICE_FORMS = {"/models/_new/", "/targets/", "/webhooks/new/", "/endpoints/new/"}


def state_changing_routes() -> list[tuple[str, object]]:
    found = []
    for route in project_routes():
        if route.template in NOT_STATE_CHANGING or route.template.startswith("/api/schema"):
            continue
        if route.is_api:
            found += [(m, route) for m in sorted(route.methods) if m in WRITE_METHODS]
        elif route.template not in ("/healthz", "/metrics"):
            found.append(("POST", route))
    return found


def test_every_state_changing_route_declares_its_minimum_role():
    declared, unknown = set(MINIMUM_ROLE), []
    for method, route in state_changing_routes():
        if (method, route.template) in declared:
            continue
        # A page route that does not take a POST is read-only; check it refuses POST.
        unknown.append(f"{method} {route.template}")
    page_reads = {
        "/",
        "/accounts/audit/",
        "/alerts/",
        "/builds/{build_id}/",
        "/endpoints/",
        "/endpoints/{name}/",
        "/endpoints/{name}/alerts/",
        "/endpoints/{name}/drift/",
        "/endpoints/{name}/guardrails/",
        "/endpoints/{name}/monitoring/",
        "/experiments/",
        "/experiments/{pk}/",
        "/fleet/",
        "/fleet/{name}/",
        f"{BATCH}/",
        BATCH + "/{job_id}/",
        BATCH + "/{job_id}/result/",
        "/models/",
        "/models/{name}/",
        "/models/{name}/compare/",
        "/models/{name}/versions/{number}/",
        "/models/{name}/versions/{number}/files/{kind}/",
        "/webhooks/",
        "/webhooks/{pk}/",
    }
    assert sorted(u for u in unknown if u.split(" ", 1)[1] not in page_reads) == []


def _member_with_role(world: World, role: str):
    user = UserFactory(username=f"matrix-{role}")
    MembershipFactory(user=user, team=world.team, role=role)
    return user


def _allowed(minimum: str, role: str) -> bool:
    if minimum in (OWNER_ONLY, STAFF_ONLY, NOT_ALLOWED, MACHINE_ONLY, CODE_ONLY):
        return False
    return ROLES.index(role) >= ROLES.index(minimum)


MATRIX = [
    pytest.param(method, template, role, id=f"{method} {template} as {role}")
    for (method, template) in MINIMUM_ROLE
    for role in ROLES
]


@pytest.mark.parametrize(("method", "template", "role"), MATRIX)
def test_role_matrix(world, method, template, role):
    route = next(r for r in project_routes() if r.template == template)
    user = _member_with_role(world, role)
    if route.is_api:
        client = token_client(user, world.team)
    else:
        client = Client()
        client.force_login(user)
    minimum = MINIMUM_ROLE[(method, template)]
    if template in PREPARE:
        PREPARE[template](world)
    before = snapshot()
    response = call(client, method, route, world)
    after = snapshot()
    status = response.status_code
    if _allowed(minimum, role):
        assert status not in (401, 403, 404, 405), (status, response.content[:300])
        assert status < 500
        assert changed_tables(before, after) != [], "the permitted call changed nothing"
        return
    if minimum == OWNER_ONLY:
        assert status == 404
    elif minimum == NOT_ALLOWED:
        assert status == 405
    elif minimum == MACHINE_ONLY:
        assert status == 401, (status, response.content[:300])
    elif minimum == CODE_ONLY:
        assert status == 400, (status, response.content[:300])
    elif template in MESSAGE_DENIALS:
        assert status in (302, 403), status
    elif not route.is_api and template in TEAM_CHOICE_FORMS:
        assert status in (200, 400, 403), status
    else:
        assert status == 403, (status, response.content[:300])
    assert changed_tables(before, after) == []


def test_an_owner_may_revoke_their_own_token_and_staff_may_allow_hosts(world):
    client = Client()
    client.force_login(world.owner)
    route = next(r for r in project_routes() if r.template == "/accounts/tokens/{pk}/revoke/")
    assert call(client, "POST", route, world).status_code == 302
    world.token.refresh_from_db()
    assert world.token.revoked_at is not None
    world.owner.is_staff = True
    world.owner.save()
    route = next(r for r in project_routes() if r.template == "/webhooks/{pk}/allow-host/")
    assert call(client, "POST", route, world).status_code == 302
    world.webhook.refresh_from_db()
    assert world.webhook.allowed_host == "hooks.example.com"
    assert Membership.objects.get(user=world.owner).role == Role.ADMIN


def test_a_scientist_may_roll_out_on_a_dev_fleet_only(world):
    """The world's fleet is production (deployers only, in the matrix); on a dev fleet a
    scientist may start a rollout, a viewer may not."""
    Target.objects.filter(pk=world.fleet.pk).update(environment=Environment.DEV)
    route = next(r for r in project_routes() if r.template == "/api/v1/targets/{name}/rollouts/")
    viewer = token_client(_member_with_role(world, Role.VIEWER), world.team)
    before = snapshot()
    assert call(viewer, "POST", route, world).status_code == 403
    assert changed_tables(before, snapshot()) == []
    scientist = token_client(_member_with_role(world, Role.SCIENTIST), world.team)
    response = call(scientist, "POST", route, world)
    assert response.status_code == 201, response.content[:300]
    assert EdgeRollout.objects.filter(pk=response.json()["id"]).exists()


@pytest.mark.parametrize("role", ROLES)
def test_the_fleet_page_retry_needs_a_deployer(world, role):
    """The page action route is walked with `cancel`; `retry` of a stopped rollout too."""
    edge_services.edge_rollout_cancel(actor=Actor.system("tests"), rollout=world.rollout)
    client = Client()
    client.force_login(_member_with_role(world, role))
    before = snapshot()
    response = client.post(f"/fleet/{world.fleet.name}/rollouts/{world.rollout.pk}/retry/")
    if _allowed(Role.DEPLOYER, role):
        assert response.status_code == 302
        assert EdgeRollout.objects.filter(
            retry_of=world.rollout, status=RolloutStatus.RUNNING
        ).exists()
    else:
        assert response.status_code == 403
        assert changed_tables(before, snapshot()) == []


# Create routes whose body names an object: another team naming ours gets what a name that
# exists nowhere gets, and nothing is written.
CREATE_BODIES = {
    "/api/v1/experiments/": lambda world, name: {
        "endpoint": name(world.endpoint.name),
        "name": "x",
        "control": name(f"{world.model.name}:1"),
        "treatment": name(f"{world.model.name}:2"),
        "metric": "accuracy",
        "minimum_effect": 0.05,
    },
    "/api/v1/endpoints/": lambda world, name: {
        "name": "stolen",
        "target": name(world.target.name),
        "version": name(f"{world.model.name}:1"),
    },
}


def test_another_team_cannot_name_our_objects_in_create_bodies(world, outsider, other_team):
    client = token_client(outsider, other_team)
    before = snapshot()
    for path, body in CREATE_BODIES.items():
        ours = client.post(path, body(world, lambda value: value), format="json")
        missing = client.post(path, body(world, lambda value: "nowhere" + value), format="json")
        assert ours.status_code in (400, 404), (path, ours.status_code, ours.content[:200])
        assert ours.status_code == missing.status_code, path
    batches = [
        client.post(
            "/api/v1/batch-jobs/",
            {"version": version, "file": SimpleUploadedFile("in.csv", BATCH_CSV, "text/csv")},
        ).status_code
        for version in (f"{world.model.name}:1", "nowhere:1")
    ]
    assert batches[0] in (400, 404) and batches[0] == batches[1], batches
    assert changed_tables(before, snapshot()) == []
