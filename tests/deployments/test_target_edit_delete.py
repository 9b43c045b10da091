"""Targets are edited and deleted through their services from the API, the pages and the admin;
deleting one that endpoints use is refused with a readable answer and changes nothing."""

import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import AuditEvent
from deployments.models import Endpoint, Environment, Target

pytestmark = pytest.mark.django_db


@pytest.fixture
def team_admin(admin_member):
    return admin_member


@pytest.fixture
def target(team):
    return Target.objects.create(team=team, name="spare", kind="local", description="old")


@pytest.fixture
def used_target(team, target):
    Endpoint.objects.create(team=team, name="busy", target=target)
    return target


def api_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_a_team_admin_changes_a_target_through_the_api(team_admin, target):
    client = api_client(team_admin)
    answer = client.patch(
        "/api/v1/targets/spare/",
        {"description": "spare capacity", "config": {"threads": 2}},
        content_type="application/json",
    )
    assert answer.status_code == 200, answer.content
    assert answer.json()["description"] == "spare capacity"
    assert answer.json()["config"] == {"threads": 2}
    target.refresh_from_db()
    assert (target.description, target.config) == ("spare capacity", {"threads": 2})
    event = AuditEvent.objects.get(action="target.update")
    assert event.data == {"changed": ["config", "description"]}

    put = client.put(
        "/api/v1/targets/spare/",
        {"environment": "staging", "config": {}},
        content_type="application/json",
    )
    assert put.status_code == 200, put.content
    target.refresh_from_db()
    assert (target.environment, target.config) == ("staging", {})


def test_bad_settings_are_refused_with_a_reason_and_nothing_changes(team_admin, target):
    answer = api_client(team_admin).patch(
        "/api/v1/targets/spare/", {"config": {"threads": 99}}, content_type="application/json"
    )
    assert answer.status_code == 400
    assert "threads" in answer.json()["error"]
    target.refresh_from_db()
    assert target.config == {}
    assert not AuditEvent.objects.filter(action="target.update").exists()


@pytest.mark.parametrize(
    ("kind", "known"), [("local", {"threads": 1}), ("edge", {"description": "the shop floor"})]
)
def test_unknown_settings_are_named_in_the_answer_for_every_kind(team_admin, kind, known):
    """Each kind's known keys pass; any other key is named (all of them, sorted) in a 400."""
    client = api_client(team_admin)
    body = {"name": f"{kind}-spare", "kind": kind, "config": known}
    created = client.post("/api/v1/targets/", body, content_type="application/json")
    assert created.status_code == 201, created.content
    answer = client.patch(
        f"/api/v1/targets/{kind}-spare/",
        {"config": {**known, "zeta": 1, "alpha": 2}},
        content_type="application/json",
    )
    assert answer.status_code == 400, answer.content
    assert answer.json()["error"] == f"Unknown {kind} target settings: alpha, zeta."
    assert Target.objects.get(name=f"{kind}-spare").config == known


def test_a_target_in_use_is_not_deleted_and_the_answer_says_why(team_admin, used_target):
    client = api_client(team_admin)
    answer = client.delete("/api/v1/targets/spare/")
    assert answer.status_code == 409
    assert answer.json()["error"] == (
        "Target spare is used by 1 endpoint(s): busy. Delete them first."
    )
    assert Target.objects.filter(name="spare").exists()
    changed = client.patch(
        "/api/v1/targets/spare/", {"environment": "production"}, content_type="application/json"
    )
    assert changed.status_code == 409
    used_target.refresh_from_db()
    assert used_target.environment == Environment.DEV


def test_an_unused_target_is_deleted_with_an_audit_row(team_admin, target):
    answer = api_client(team_admin).delete("/api/v1/targets/spare/")
    assert answer.status_code == 204
    assert not Target.objects.filter(name="spare").exists()
    assert AuditEvent.objects.get(action="target.delete").data == {"name": "spare", "kind": "local"}


def test_members_below_admin_and_other_teams_cannot_change_or_delete(target, deployer, outsider):
    refused = api_client(deployer).delete("/api/v1/targets/spare/")
    assert refused.status_code == 403
    hidden = api_client(outsider).patch(
        "/api/v1/targets/spare/", {"description": "x"}, content_type="application/json"
    )
    assert hidden.status_code == 404
    target.refresh_from_db()
    assert target.description == "old"
    assert Target.objects.filter(name="spare").exists()


def test_the_pages_edit_and_delete_a_target(team_admin, target):
    client = api_client(team_admin)
    listing = client.get(reverse("deployments:target-list")).content.decode()
    assert reverse("deployments:target-edit", args=["spare"]) in listing
    page = client.get(reverse("deployments:target-edit", args=["spare"]))
    assert page.status_code == 200
    saved = client.post(
        reverse("deployments:target-edit", args=["spare"]),
        {"environment": "staging", "config": '{"threads": 1}', "description": "edited"},
    )
    assert saved.status_code == 302
    target.refresh_from_db()
    assert (target.environment, target.config, target.description) == (
        "staging", {"threads": 1}, "edited",
    )  # fmt: skip
    bad = client.post(
        reverse("deployments:target-edit", args=["spare"]),
        {"environment": "staging", "config": "[1]", "description": ""},
    )
    assert bad.status_code == 200
    assert "Use a JSON object." in bad.content.decode()
    deleted = client.post(reverse("deployments:target-delete", args=["spare"]))
    assert deleted.status_code == 302
    assert not Target.objects.filter(name="spare").exists()


def test_the_page_refuses_to_delete_a_target_in_use(team_admin, used_target):
    client = api_client(team_admin)
    answer = client.post(reverse("deployments:target-delete", args=["spare"]), follow=True)
    assert "Target spare is used by 1 endpoint(s): busy." in answer.content.decode()
    assert Target.objects.filter(name="spare").exists()
