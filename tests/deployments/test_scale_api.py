"""Scaling a version: the API (roles, validation, audit, one release), the service's carrying of
the scale across releases, and the endpoint page's control."""

import re

import pytest
from django.test import Client
from django.utils import timezone

from accounts.actor import Actor
from accounts.models import AuditEvent
from common.errors import ApplicationError
from deployments import services
from deployments.models import (
    DeploymentEvent,
    Endpoint,
    EndpointStatus,
    Environment,
    Release,
    Target,
    TargetKind,
)

pytestmark = pytest.mark.django_db

URL = "/api/v1/endpoints/adder-scale/scale/"


@pytest.fixture
def endpoint(versions, dev_target, system):
    endpoint = services.endpoint_create(
        actor=system, name="adder-scale", target=dev_target, version="adder:1"
    )
    _mark_live(endpoint.desired_release)
    endpoint.refresh_from_db()
    return endpoint


def _mark_live(release):
    Release.objects.filter(pk=release.pk).update(live_at=timezone.now())
    Endpoint.objects.filter(pk=release.endpoint_id).update(
        live_release=release, status=EndpointStatus.LIVE, url="http://127.0.0.1:22999"
    )


def _state():
    return (
        Release.objects.count(),
        AuditEvent.objects.count(),
        DeploymentEvent.objects.count(),
        list(Endpoint.objects.values_list("name", "generation", "desired_release_id", "status")),
    )


def _target(team, kind, name):
    return Target.objects.create(team=team, name=name, kind=kind, environment=Environment.DEV)


def test_a_deployer_scales_a_version_with_one_release_and_one_audit_row(endpoint, deployer_api):
    audits = AuditEvent.objects.count()
    response = deployer_api.post(URL, {"version": "adder:1", "replicas": 3}, format="json")
    assert response.status_code == 202, response.content
    assert response.json() == {
        "release": 2, "version": "adder:1", "replicas": 3, "autoscale": None,
    }  # fmt: skip
    release = Release.objects.get(endpoint=endpoint, number=2)
    assert release.reason == "scale"
    assert [(v["version"], v["weight"], v["role"], v["replicas"]) for v in release.variants] == [
        ("adder:1", 100, "primary", 3)
    ]
    endpoint.refresh_from_db()
    assert endpoint.desired_release == release
    assert endpoint.generation == 2
    assert endpoint.status == EndpointStatus.PENDING
    assert AuditEvent.objects.count() == audits + 1
    audit = AuditEvent.objects.latest("id")
    assert audit.action == "endpoint.scale"
    assert audit.data["version"] == "adder:1"
    assert audit.data["replicas"] == 3
    assert audit.data["before"] == {}
    assert audit.data["release"] == 2
    event = DeploymentEvent.objects.filter(endpoint=endpoint).latest("id")
    assert event.message.startswith("Release 2 (scale): adder:1 100 % (3 replicas) by ")


def test_scaling_needs_the_deployer_role_and_other_teams_see_nothing(
    endpoint, scientist_api, viewer_api, outsider_api
):
    before = _state()
    payload = {"version": "adder:1", "replicas": 2}
    assert scientist_api.post(URL, payload, format="json").status_code == 403
    assert viewer_api.post(URL, payload, format="json").status_code == 403
    assert outsider_api.post(URL, payload, format="json").status_code == 404
    assert _state() == before


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"version": "adder:2", "replicas": 2},
         "'adder:2' is not in the current release (it serves adder:1)."),
        ({"version": "adder:1", "replicas": 0}, "replicas must be a whole number from 1 to 20."),
        ({"version": "adder:1", "replicas": 21}, "replicas must be a whole number from 1 to 20."),
        ({"version": "adder:1"},
         "Give either replicas or autoscale {min, max, target_cpu_percent}."),
        ({"version": "adder:1", "replicas": 2,
          "autoscale": {"min": 1, "max": 3, "target_cpu_percent": 70}},
         "Give either replicas or autoscale {min, max, target_cpu_percent}."),
        ({"version": "adder:1", "autoscale": {"min": 1, "max": 3, "target_cpu_percent": 70}},
         "Local targets cannot autoscale (nothing there measures CPU and adds replicas); set a "
         "fixed number of replicas instead."),
        ({"version": "adder:1", "replicas": 1}, "adder:1 already runs that way."),
    ],
)  # fmt: skip
def test_bad_scale_requests_answer_400_with_a_readable_message_and_change_nothing(
    endpoint, deployer_api, payload, message
):
    before = _state()
    response = deployer_api.post(URL, payload, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["error"] == message
    assert _state() == before


def test_a_number_that_is_not_a_number_is_refused(endpoint, deployer_api):
    before = _state()
    response = deployer_api.post(URL, {"version": "adder:1", "replicas": "many"}, format="json")
    assert response.status_code == 400
    assert "replicas" in str(response.json())
    assert _state() == before


def test_edge_targets_say_scaling_does_not_apply(versions, team, deployer, make_actor):
    actor = make_actor(deployer)
    edge = _target(team, TargetKind.EDGE, "fleet")
    endpoint = services.endpoint_create(actor=actor, name="on-edge", target=edge, version="adder:1")
    before = _state()
    with pytest.raises(ApplicationError) as refused:
        services.endpoint_scale(actor=actor, endpoint=endpoint, version="adder:1", replicas=2)
    assert refused.value.message == (
        "Scaling does not apply to edge targets: each device runs one copy of the version it is "
        "given."
    )
    assert _state() == before


def test_kubernetes_targets_take_an_autoscale_and_check_its_bounds(
    versions, team, deployer, make_actor
):
    actor = make_actor(deployer)
    cluster = _target(team, TargetKind.KUBERNETES, "cluster")
    endpoint = services.endpoint_create(
        actor=actor, name="on-k8s", target=cluster, version="adder:1"
    )
    with pytest.raises(ApplicationError) as refused:
        services.endpoint_scale(
            actor=actor, endpoint=endpoint, version="adder:1",
            autoscale={"min": 4, "max": 2, "target_cpu_percent": 70},
        )  # fmt: skip
    assert refused.value.message == "autoscale max must be a whole number from 4 to 20."
    release = services.endpoint_scale(
        actor=actor, endpoint=endpoint, version="adder:1",
        autoscale={"min": 2, "max": 5, "target_cpu_percent": 60},
    )  # fmt: skip
    assert release.variants[0]["autoscale"] == {"min": 2, "max": 5, "target_cpu_percent": 60}
    assert "replicas" not in release.variants[0]
    # A fixed count replaces the autoscale again.
    release = services.endpoint_scale(actor=actor, endpoint=endpoint, version="adder:1", replicas=2)
    assert release.variants[0]["replicas"] == 2
    assert "autoscale" not in release.variants[0]


def test_a_version_keeps_its_replicas_through_traffic_changes_and_a_rollback_restores_them(
    endpoint, deployer, make_actor
):
    actor = make_actor(deployer)
    services.endpoint_scale(actor=actor, endpoint=endpoint, version="adder:1", replicas=3)
    canary = services.endpoint_deploy(actor=actor, endpoint=endpoint, version="adder:2", weight=10)
    assert [(v["version"], v.get("replicas")) for v in canary.variants] == [
        ("adder:1", 3), ("adder:2", None),
    ]  # fmt: skip
    split = services.endpoint_set_traffic(
        actor=actor, endpoint=endpoint, variants=[
            {"version": "adder:1", "weight": 50, "role": "primary"},
            {"version": "adder:2", "weight": 50, "role": "candidate"},
        ],
    )  # fmt: skip
    assert [v.get("replicas") for v in split.variants] == [3, None]
    services.endpoint_scale(actor=actor, endpoint=endpoint, version="adder:2", replicas=2)
    promoted = services.endpoint_promote(actor=actor, endpoint=endpoint)
    assert [(v["version"], v["replicas"]) for v in promoted.variants] == [("adder:2", 2)]
    # Back to release 1, where adder:1 ran once: the rollback restores that, not today's 3.
    rollback = services.endpoint_rollback(actor=actor, endpoint=endpoint, release_number=1)
    assert [(v["version"], v["replicas"]) for v in rollback.variants] == [("adder:1", 1)]


def test_a_stopped_endpoint_has_nothing_to_scale(endpoint, deployer, make_actor):
    actor = make_actor(deployer)
    services.endpoint_stop(actor=actor, endpoint=endpoint)
    before = _state()
    with pytest.raises(ApplicationError) as refused:
        services.endpoint_scale(actor=actor, endpoint=endpoint, version="adder:1", replicas=2)
    assert refused.value.message == "The endpoint serves nothing to scale; deploy a version."
    assert _state() == before


# --- the page ---------------------------------------------------------------------------------


def _browser(user) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def _csrf(client: Client, url: str) -> str:
    page = client.get(url).content.decode()
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)


def test_the_page_shows_ready_and_desired_replicas_and_scales_down_only_after_confirming(
    endpoint, deployer
):
    page_url = "/endpoints/adder-scale/"
    scale_url = "/endpoints/adder-scale/scale/"
    Endpoint.objects.filter(pk=endpoint.pk).update(
        replica_status={str(endpoint.desired_release.variants[0]["version_id"]): {
            "version": "adder:1", "ready": 1, "desired": 1}}
    )  # fmt: skip
    browser = _browser(deployer)
    page = browser.get(page_url).content.decode()
    assert '<span class="replicas">1 / 1</span>' in page
    assert "autoscaling needs a Kubernetes target" in page
    token = _csrf(browser, page_url)
    htmx = {"HTTP_HX_REQUEST": "true"}

    # Without the CSRF token nothing happens.
    before = _state()
    assert browser.post(scale_url, {"version": "adder:1", "replicas": 3}).status_code == 403
    assert _state() == before

    answer = browser.post(
        scale_url, {"version": "adder:1", "replicas": 3, "csrfmiddlewaretoken": token}, **htmx
    )
    assert answer.status_code == 200
    assert "Release 2 written: adder:1 on 3." in answer.content.decode()
    assert '<span class="replicas">1 / 3</span>' in answer.content.decode()

    before = _state()
    answer = browser.post(
        scale_url, {"version": "adder:1", "replicas": 1, "csrfmiddlewaretoken": token}, **htmx
    ).content.decode()
    assert "Scale <code>adder:1</code> down from 3 to 1 replica?" in answer
    assert _state() == before  # asked, nothing written yet

    answer = browser.post(
        scale_url,
        {"version": "adder:1", "replicas": 1, "confirmed": "on", "csrfmiddlewaretoken": token},
        **htmx,
    ).content.decode()
    assert "Release 3 written: adder:1 on 1." in answer
    assert Release.objects.get(endpoint=endpoint, number=3).variants[0]["replicas"] == 1


def test_the_page_tells_a_scientist_the_role_it_needs(endpoint, scientist):
    browser = _browser(scientist)
    token = _csrf(browser, "/endpoints/adder-scale/")
    before = _state()
    response = browser.post(
        "/endpoints/adder-scale/scale/",
        {"version": "adder:1", "replicas": 2, "csrfmiddlewaretoken": token},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 403
    assert _state() == before


def test_replicas_per_version_are_listed_with_ready_and_desired(endpoint, viewer_api, outsider_api):
    services.endpoint_scale(
        actor=Actor.system("tests"), endpoint=endpoint, version="adder:1", replicas=2
    )
    version_id = endpoint.desired_release.variants[0]["version_id"]
    Endpoint.objects.filter(pk=endpoint.pk).update(
        replica_status={str(version_id): {"version": "adder:1", "ready": 1, "desired": 2}}
    )
    body = viewer_api.get(URL).json()
    assert body["results"] == [
        {"version": "adder:1", "role": "primary", "ready": 1, "desired": 2, "autoscale": None,
         "warm_until": None},
    ]  # fmt: skip
    assert outsider_api.get(URL).status_code == 404


def test_without_htmx_a_scale_down_asks_on_its_own_page_and_a_scale_up_goes_back(
    endpoint, deployer
):
    browser = _browser(deployer)
    token = _csrf(browser, "/endpoints/adder-scale/")
    answer = browser.post(
        "/endpoints/adder-scale/scale/",
        {"version": "adder:1", "replicas": 2, "csrfmiddlewaretoken": token},
    )
    assert answer.status_code == 302
    assert answer.url == "/endpoints/adder-scale/"
    before = _state()
    page = browser.post(
        "/endpoints/adder-scale/scale/",
        {"version": "adder:1", "replicas": 1, "csrfmiddlewaretoken": token},
    ).content.decode()
    assert "Scale <code>adder:1</code> down from 2 to 1 replica?" in page
    assert "<html" in page
    assert _state() == before
