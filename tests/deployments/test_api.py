"""The deployments REST API: paths and fields of API.md, 202 writes, scoping, error format."""

import pytest
from django.utils import timezone

from accounts.models import AuditEvent
from deployments import services
from deployments.models import Build, DeploymentEvent, Endpoint, EndpointStatus, Release, Target

pytestmark = pytest.mark.django_db


@pytest.fixture
def endpoint(versions, dev_target, system):
    return services.endpoint_create(
        actor=system, name="adder-api", target=dev_target, version="adder:1"
    )


def _mark_live(release):
    Release.objects.filter(pk=release.pk).update(live_at=timezone.now())
    Endpoint.objects.filter(pk=release.endpoint_id).update(
        live_release=release, status=EndpointStatus.LIVE, url="http://127.0.0.1:18100"
    )


def _state():
    return (
        Release.objects.count(),
        AuditEvent.objects.count(),
        DeploymentEvent.objects.count(),
        list(Endpoint.objects.values_list("name", "generation", "desired_release_id", "status")),
        Target.objects.count(),
    )


def test_create_endpoint_answers_201_with_the_contract_fields(versions, dev_target, scientist_api):
    response = scientist_api.post(
        "/api/v1/endpoints/", {"name": "adder-api", "target": "local-dev", "version": "adder:1"},
        format="json",
    )  # fmt: skip
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "adder-api"
    assert body["status"] == "pending"
    assert body["url"] == ""
    assert body["release"] == 1
    assert body["target"] == "local-dev"
    assert body["traffic"] == [
        {"version": "adder:1", "weight": 100, "role": "primary", "mirror_percent": 0}
    ]


def test_detail_shows_status_url_traffic_release(endpoint, scientist_api):
    _mark_live(endpoint.desired_release)
    body = scientist_api.get("/api/v1/endpoints/adder-api/").json()
    assert {k: body[k] for k in ("status", "url", "release", "live_release")} == {
        "status": "live", "url": "http://127.0.0.1:18100", "release": 1, "live_release": 1,
    }  # fmt: skip


def test_writes_answer_202_with_the_new_release_number(endpoint, scientist_api):
    _mark_live(endpoint.desired_release)
    base = "/api/v1/endpoints/adder-api"
    steps = [
        ("deploy", {"version": "adder:2", "weight": 10}),
        ("traffic", {"variants": [
            {"version": "adder:1", "weight": 70, "role": "primary"},
            {"version": "adder:2", "weight": 30, "role": "candidate"},
            {"version": "adder:3", "weight": 5, "role": "shadow"}]}),
        ("promote", {}),
        ("rollback", {"release": 1}),
        ("stop", {}),
    ]  # fmt: skip
    for number, (path, payload) in enumerate(steps, start=2):
        response = scientist_api.post(f"{base}/{path}/", payload, format="json")
        assert response.status_code == 202, response.content
        assert response.json() == {"release": number}
    traffic = Release.objects.get(number=3).variants
    assert [(v["version"], v["weight"], v["role"], v["mirror_percent"]) for v in traffic] == [
        ("adder:1", 70, "primary", 0), ("adder:2", 30, "candidate", 0), ("adder:3", 0, "shadow", 5),
    ]  # fmt: skip


def test_deploy_with_strategy(endpoint, scientist_api):
    response = scientist_api.post(
        "/api/v1/endpoints/adder-api/deploy/",
        {"version": "adder:2", "strategy": [{"weight": 5, "bake_seconds": 30},
                                            {"weight": 100, "bake_seconds": 0}]},
        format="json",
    )  # fmt: skip
    assert response.status_code == 202
    release = Release.objects.get(number=2)
    assert release.strategy == [
        {"weight": 5, "bake_seconds": 30},
        {"weight": 100, "bake_seconds": 0},
    ]
    assert release.variants[1]["weight"] == 5


def test_rollback_without_body_uses_the_last_live_release(endpoint, scientist_api):
    _mark_live(endpoint.desired_release)
    scientist_api.post("/api/v1/endpoints/adder-api/deploy/", {"version": "adder:2"}, format="json")
    response = scientist_api.post("/api/v1/endpoints/adder-api/rollback/", {}, format="json")
    assert response.status_code == 202
    assert response.json() == {"release": 3}
    assert Release.objects.get(number=3).restores.number == 1


def test_releases_newest_first_and_events_since(endpoint, scientist_api):
    scientist_api.post("/api/v1/endpoints/adder-api/deploy/", {"version": "adder:2"}, format="json")
    releases = scientist_api.get("/api/v1/endpoints/adder-api/releases/").json()["results"]
    assert [r["number"] for r in releases] == [2, 1]
    assert releases[0]["traffic"][0]["version"] == "adder:2"
    assert releases[0]["reason"] == "deploy"
    events = scientist_api.get("/api/v1/endpoints/adder-api/events/").json()["results"]
    assert len(events) == 2
    first_id = events[0]["id"]
    later = scientist_api.get(f"/api/v1/endpoints/adder-api/events/?since={first_id}")
    later = later.json()["results"]
    assert [e["id"] for e in later] == [events[1]["id"]]
    assert later[0]["release"] == 2
    bad = scientist_api.get("/api/v1/endpoints/adder-api/events/?since=abc")
    assert bad.status_code == 400


@pytest.mark.parametrize(
    ("path", "payload", "message"),
    [
        ("deploy", {"version": "adder:9"}, "Model 'adder' has no version 9"),
        ("deploy", {"version": "adder:2", "weight": 150}, "weight: "),
        ("traffic", {"variants": [{"version": "adder:1", "weight": 40, "role": "primary"},
                                  {"version": "adder:2", "weight": 40, "role": "candidate"}]},
         "Weights of the primary and candidate versions sum to 80, not 100."),
        ("promote", {}, "There is no candidate to promote."),
        ("rollback", {"release": 7}, "This endpoint has no release 7."),
    ],
)  # fmt: skip
def test_bad_input_is_400_with_error_and_detail_and_changes_nothing(
    endpoint, scientist_api, path, payload, message
):
    before = _state()
    response = scientist_api.post(f"/api/v1/endpoints/adder-api/{path}/", payload, format="json")
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"error", "detail"}
    assert body["error"].startswith(message)
    assert _state() == before


def test_bad_endpoint_name_is_400(versions, dev_target, scientist_api):
    response = scientist_api.post(
        "/api/v1/endpoints/", {"name": "Bad_Name", "target": "local-dev", "version": "adder:1"},
        format="json",
    )  # fmt: skip
    assert response.status_code == 400
    assert "Endpoint name 'Bad_Name'" in response.json()["error"]
    assert not Endpoint.objects.exists()


def test_viewer_may_read_but_not_write(endpoint, viewer_api):
    assert viewer_api.get("/api/v1/endpoints/adder-api/").status_code == 200
    before = _state()
    response = viewer_api.post(
        "/api/v1/endpoints/adder-api/deploy/", {"version": "adder:2"}, format="json"
    )
    assert response.status_code == 403
    assert _state() == before


ENDPOINT_ROUTES = [
    ("get", "/api/v1/endpoints/adder-api/", None),
    ("get", "/api/v1/endpoints/adder-api/releases/", None),
    ("get", "/api/v1/endpoints/adder-api/events/", None),
    ("post", "/api/v1/endpoints/adder-api/deploy/", {"version": "adder:2"}),
    ("post", "/api/v1/endpoints/adder-api/traffic/", {"variants": [{"version": "adder:2"}]}),
    ("post", "/api/v1/endpoints/adder-api/promote/", {}),
    ("post", "/api/v1/endpoints/adder-api/rollback/", {"release": 1}),
    ("post", "/api/v1/endpoints/adder-api/stop/", {}),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "payload"), ENDPOINT_ROUTES)
def test_other_teams_endpoint_is_404_everywhere_and_nothing_changes(
    endpoint, outsider_api, method, path, payload
):
    before = _state()
    response = getattr(outsider_api, method)(path, payload, format="json")
    assert response.status_code == 404
    assert _state() == before


def test_lists_are_scoped_to_the_callers_teams(endpoint, outsider_api, scientist_api):
    assert outsider_api.get("/api/v1/endpoints/").json()["results"] == []
    assert outsider_api.get("/api/v1/targets/").json()["results"] == []
    assert [e["name"] for e in scientist_api.get("/api/v1/endpoints/").json()["results"]] == [
        "adder-api"
    ]
    assert [t["name"] for t in scientist_api.get("/api/v1/targets/").json()["results"]] == [
        "local-dev"
    ]


def test_create_on_another_teams_target_is_refused(versions, dev_target, outsider_api):
    response = outsider_api.post(
        "/api/v1/endpoints/", {"name": "sneaky", "target": "local-dev", "version": "adder:1"},
        format="json",
    )  # fmt: skip
    assert response.status_code == 400
    assert response.json()["error"] == "Unknown target 'local-dev'."
    assert not Endpoint.objects.exists()


def test_admin_creates_targets_others_may_not(team, admin_member, scientist_api, api_for):
    payload = {"name": "staging-box", "kind": "local", "environment": "staging"}
    before = _state()
    assert scientist_api.post("/api/v1/targets/", payload, format="json").status_code == 403
    assert _state() == before
    response = api_for(admin_member, team).post("/api/v1/targets/", payload, format="json")
    assert response.status_code == 201
    assert response.json()["environment"] == "staging"
    assert response.json()["team"] == "alpha"


def test_build_detail_is_scoped(versions, dev_target, scientist_api, outsider_api):
    build = Build.objects.create(
        version=versions[1], target=dev_target, base_image="python:3.11-slim", progress=40,
        log="step 1\n",
    )  # fmt: skip
    body = scientist_api.get(f"/api/v1/builds/{build.pk}/").json()
    assert (body["status"], body["progress"], body["log"], body["version"]) == (
        "pending", 40, "step 1\n", "adder:1",
    )  # fmt: skip
    assert outsider_api.get(f"/api/v1/builds/{build.pk}/").status_code == 404


def test_anonymous_is_401(endpoint, client):
    from rest_framework.test import APIClient

    assert APIClient().get("/api/v1/endpoints/").status_code == 401
    assert (
        APIClient().post("/api/v1/endpoints/adder-api/stop/", {}, format="json").status_code == 401
    )


@pytest.fixture
def kubernetes_endpoint(versions, team, system):
    target = Target.objects.create(team=team, name="cluster", kind="kubernetes", config={})
    endpoint = services.endpoint_create(
        actor=system, name="on-k8s", target=target, version="adder:1"
    )
    services.endpoint_stop(actor=system, endpoint=endpoint)
    return endpoint


def test_manifests_export_a_kubernetes_release_as_yaml(kubernetes_endpoint, deployer_api):
    response = deployer_api.get("/api/v1/endpoints/on-k8s/releases/2/manifests/")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/yaml; charset=utf-8"
    assert b"This release stops the endpoint" in response.content
    missing = deployer_api.get("/api/v1/endpoints/on-k8s/releases/9/manifests/")
    assert missing.status_code == 404


def test_manifests_need_a_deployer_and_a_kubernetes_target(
    kubernetes_endpoint, endpoint, scientist_api, deployer_api, outsider_api
):
    assert scientist_api.get("/api/v1/endpoints/on-k8s/releases/2/manifests/").status_code == 403
    assert outsider_api.get("/api/v1/endpoints/on-k8s/releases/2/manifests/").status_code == 404
    local = deployer_api.get("/api/v1/endpoints/adder-api/releases/1/manifests/")
    assert local.status_code == 400
    assert local.json()["error"] == "Manifests exist only for endpoints on Kubernetes targets."
