"""Deployment pages: lists, the endpoint page (split, history, rollback), deploy form, targets."""

import re

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import AuditEvent
from deployments import selectors, services
from deployments.models import Build, Endpoint, EndpointStatus, Release, Target

pytestmark = pytest.mark.django_db


@pytest.fixture
def endpoint(versions, dev_target, system):
    endpoint = services.endpoint_create(
        actor=system, name="adder-web", target=dev_target, version="adder:1"
    )
    _mark_live(endpoint.desired_release)
    services.endpoint_deploy(actor=system, endpoint=endpoint, version="adder:2", weight=10)
    endpoint.refresh_from_db()
    return endpoint


def _mark_live(release):
    Release.objects.filter(pk=release.pk).update(live_at=timezone.now())
    Endpoint.objects.filter(pk=release.endpoint_id).update(
        live_release=release, status=EndpointStatus.LIVE, url="http://127.0.0.1:18100"
    )


def _browser(user) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def _csrf(client: Client, url: str) -> str:
    page = client.get(url).content.decode()
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)


def _state():
    return (
        Release.objects.count(),
        AuditEvent.objects.count(),
        list(Endpoint.objects.values_list("generation", "desired_release_id")),
    )


def test_pages_need_login(client):
    for url in ["/endpoints/", "/endpoints/new/", "/endpoints/x/", "/targets/", "/builds/1/"]:
        response = client.get(url)
        assert response.status_code == 302
        assert response.url.startswith("/accounts/login/")


def test_endpoint_list_shows_status_serving_and_split(endpoint, scientist):
    page = _browser(scientist).get("/endpoints/").content.decode()
    assert "adder-web" in page
    assert "status-pending" in page
    assert "<code>adder:1</code> 90 %" in page
    assert "<code>adder:2</code> 10 %" in page


def test_endpoint_page_has_split_form_history_and_rollback_buttons(endpoint, scientist):
    page = _browser(scientist).get("/endpoints/adder-web/").content.decode()
    assert 'action="/endpoints/adder-web/traffic/"' in page
    assert page.count("Roll back to this") == 1  # release 1; release 2 is the current one
    assert 'data-confirm="Roll adder-web back to release 1?"' in page
    assert "Promote candidate" in page
    # Polls while the change is pending, and never runs inline script (CSP).
    assert 'hx-trigger="every 2s"' in page
    assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page) is None
    assert "js/deployments-traffic.js" in page


def test_progress_partial_polls_until_settled_then_refreshes_the_page(endpoint, scientist):
    browser = _browser(scientist)
    partial = browser.get("/endpoints/adder-web/", HTTP_HX_REQUEST="true")
    assert partial.status_code == 200
    assert b"<html" not in partial.content
    assert b'hx-trigger="every 2s"' in partial.content
    _mark_live(endpoint.desired_release)
    settled = browser.get("/endpoints/adder-web/", HTTP_HX_REQUEST="true")
    assert settled.status_code == 204
    assert settled["HX-Refresh"] == "true"
    page = browser.get("/endpoints/adder-web/").content.decode()
    assert "every 2s" not in page


def test_one_click_rollback_posts_with_csrf(endpoint, scientist):
    browser = _browser(scientist)
    before = _state()
    assert browser.post("/endpoints/adder-web/rollback/", {"release": 1}).status_code == 403
    assert _state() == before
    token = _csrf(browser, "/endpoints/adder-web/")
    response = browser.post(
        "/endpoints/adder-web/rollback/", {"release": 1, "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302
    assert response.url == "/endpoints/adder-web/"
    release = Release.objects.get(number=3)
    assert release.restores.number == 1
    assert AuditEvent.objects.latest("id").action == "endpoint.rollback"


def test_traffic_form_sets_weights(endpoint, scientist):
    browser = _browser(scientist)
    token = _csrf(browser, "/endpoints/adder-web/")
    form = {
        "csrfmiddlewaretoken": token,
        "version_0": "adder:1", "weight_0": 30, "role_0": "primary",
        "version_1": "adder:2", "weight_1": 70, "role_1": "candidate",
    }  # fmt: skip
    assert browser.post("/endpoints/adder-web/traffic/", form).status_code == 302
    release = Release.objects.get(number=3)
    assert [(v["version"], v["weight"]) for v in release.variants] == [
        ("adder:1", 30),
        ("adder:2", 70),
    ]


def test_bad_split_shows_a_message_and_writes_nothing(endpoint, scientist):
    browser = _browser(scientist)
    token = _csrf(browser, "/endpoints/adder-web/")
    before = _state()
    form = {
        "csrfmiddlewaretoken": token,
        "version_0": "adder:1", "weight_0": 30, "role_0": "primary",
        "version_1": "adder:2", "weight_1": 30, "role_1": "candidate",
    }  # fmt: skip
    response = browser.post("/endpoints/adder-web/traffic/", form, follow=True)
    assert "sum to 60, not 100" in response.content.decode()
    assert _state() == before


@pytest.mark.parametrize("path", ["deploy/", "traffic/", "promote/", "rollback/", "stop/"])
def test_other_teams_endpoint_pages_are_404_and_change_nothing(endpoint, outsider, path):
    browser = _browser(outsider)
    assert browser.get("/endpoints/adder-web/").status_code == 404
    client = Client()
    client.force_login(outsider)
    before = _state()
    response = client.post(f"/endpoints/adder-web/{path}", {"release": 1, "version": "adder:2"})
    assert response.status_code == 404
    assert _state() == before


def test_viewer_cannot_change_an_endpoint(endpoint, viewer):
    client = Client()
    client.force_login(viewer)
    before = _state()
    assert client.post("/endpoints/adder-web/promote/").status_code == 403
    assert _state() == before


def test_deploy_form_from_a_version_creates_an_endpoint(versions, dev_target, scientist):
    browser = _browser(scientist)
    page = browser.get("/endpoints/new/?version=adder:2").content.decode()
    assert 'value="adder:2"' in page
    token = _csrf(browser, "/endpoints/new/")
    response = browser.post(
        "/endpoints/new/",
        {
            "csrfmiddlewaretoken": token,
            "name": "fresh",
            "target": "local-dev",
            "version": "adder:2",
        },
    )
    assert response.status_code == 302
    assert response.url == "/endpoints/fresh/"
    assert Endpoint.objects.get(name="fresh").desired_release.variants[0]["version"] == "adder:2"


def test_deploy_form_shows_service_errors(versions, dev_target, scientist):
    browser = _browser(scientist)
    token = _csrf(browser, "/endpoints/new/")
    response = browser.post(
        "/endpoints/new/",
        {
            "csrfmiddlewaretoken": token,
            "name": "fresh",
            "target": "local-dev",
            "version": "adder:9",
        },
    )
    assert response.status_code == 200
    assert "has no version 9" in response.content.decode()
    assert not Endpoint.objects.exists()


def test_targets_page_lets_admins_add_targets(team, admin_member, scientist, dev_target):
    page = _browser(scientist).get("/targets/").content.decode()
    assert "local-dev" in page
    assert "Add a target" not in page
    browser = _browser(admin_member)
    token = _csrf(browser, "/targets/")
    response = browser.post(
        "/targets/",
        {"csrfmiddlewaretoken": token, "team": "alpha", "name": "lab", "kind": "local",
         "environment": "staging", "config": '{"threads": 1}', "description": ""},
    )  # fmt: skip
    assert response.status_code == 302
    assert Target.objects.get(name="lab").config == {"threads": 1}


def test_build_page_shows_progress_and_log(versions, dev_target, scientist, outsider):
    build = Build.objects.create(
        version=versions[1], target=dev_target, base_image="python:3.11-slim", progress=40,
        status="running", log="Step 1/4\n",
    )  # fmt: skip
    page = _browser(scientist).get(f"/builds/{build.pk}/").content.decode()
    assert '<progress value="40" max="100"' in page
    assert "Step 1/4" in page
    assert 'hx-trigger="every 2s"' in page
    assert _browser(outsider).get(f"/builds/{build.pk}/").status_code == 404


def test_dashboard_cards(endpoint, scientist, outsider, make_actor):
    cards = selectors.endpoint_cards_for_actor(actor=make_actor(scientist))
    assert cards == [
        {
            "name": "adder-web",
            "status": "pending",
            "health": "warn",
            "summary": "adder:1 100 %",
            "url": "/endpoints/adder-web/",
        }
    ]
    Endpoint.objects.update(status=EndpointStatus.FAILED, status_reason="Release 2 failed: boom")
    card = selectors.endpoint_cards_for_actor(actor=make_actor(scientist))[0]
    assert (card["health"], card["summary"]) == ("bad", "Release 2 failed: boom")
    assert selectors.endpoint_cards_for_actor(actor=make_actor(outsider)) == []
