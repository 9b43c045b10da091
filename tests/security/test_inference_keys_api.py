"""Inference keys through the API and the endpoint page: shown once, listed by prefix only,
revoked, scoped to the team and the deployer role; the requirement switched by PUT."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts import tokens
from accounts.models import AuditEvent, Role
from deployments import access
from deployments.models import Endpoint, EndpointKey, Environment, Target, TargetKind
from deployments.services import endpoint_create
from tests.conftest import actor_for, token_client
from tests.deployments.conftest import make_version
from tests.factories import MembershipFactory, UserFactory
from tests.security.conftest import session_client

pytestmark = pytest.mark.django_db
FIXTURES = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


@pytest.fixture
def endpoint(team, adder_model, admin_member):
    make_version(adder_model, number=1)
    target = Target.objects.create(
        team=team, name="local-dev", kind=TargetKind.LOCAL, environment=Environment.DEV
    )
    return endpoint_create(
        actor=actor_for(admin_member), name="open", target=target, version="adder:1"
    )


@pytest.fixture
def people(team, other_team):
    made = {}
    for role in Role.values:
        made[role] = MembershipFactory(
            user=UserFactory(username=f"u-{role}"), team=team, role=role
        ).user
    made["outsider"] = MembershipFactory(
        user=UserFactory(username="u-outsider"), team=other_team, role=Role.ADMIN
    ).user
    return made


def client_for(people, who, team, other_team):
    return token_client(people[who], other_team if who == "outsider" else team)


@pytest.mark.parametrize("kind", [TargetKind.DOCKER, TargetKind.KUBERNETES, TargetKind.LOCAL])
def test_docker_and_kubernetes_endpoints_require_a_key_from_the_start(
    kind,
    team,
    adder_model,
    admin_member,
):
    make_version(adder_model, number=1)
    target = Target.objects.create(team=team, name=f"t-{kind}", kind=kind, config={})
    endpoint = endpoint_create(
        actor=actor_for(admin_member), name=f"e-{kind}", target=target, version="adder:1"
    )
    assert endpoint.require_key is (kind != TargetKind.LOCAL)
    assert access.endpoint_access_document(endpoint) == {
        "require_key": kind != TargetKind.LOCAL,
        "keys": [],
    }


@pytest.mark.parametrize("kind", [TargetKind.KUBERNETES, TargetKind.EDGE])
def test_endpoints_whose_traffic_skips_the_gateway_never_claim_to_require_a_key(
    kind, team, adder_model, admin_member
):
    make_version(adder_model, number=1)
    config = {"traffic": "gateway-api"} if kind == TargetKind.KUBERNETES else {}
    target = Target.objects.create(team=team, name="elsewhere", kind=kind, config=config)
    endpoint = Endpoint.objects.create(team=team, name="elsewhere", target=target)
    if kind == TargetKind.KUBERNETES:
        created = endpoint_create(
            actor=actor_for(admin_member), name="split", target=target, version="adder:1"
        )
        assert created.require_key is False
    client = token_client(admin_member, team)
    response = client.put("/api/v1/endpoints/elsewhere/", {"require_key": True}, "json")
    assert response.status_code == 400
    assert "gateway" in response.json()["error"]
    assert Endpoint.objects.get(pk=endpoint.pk).require_key is False


@settings(max_examples=30, suppress_health_check=FIXTURES, deadline=None)
@given(
    who=st.sampled_from([*Role.values, "outsider"]),
    name=st.text(max_size=120),
)
def test_only_deployers_and_admins_of_the_team_create_keys_shown_once(
    endpoint, people, team, other_team, who, name
):
    client = client_for(people, who, team, other_team)
    before = EndpointKey.objects.count()
    response = client.post(f"/api/v1/endpoints/{endpoint.name}/keys/", {"name": name}, "json")
    allowed = who in (Role.DEPLOYER, Role.ADMIN)
    if not allowed:
        assert response.status_code == (404 if who == "outsider" else 403)
        assert EndpointKey.objects.count() == before
        return
    if len(name) > 100 or "\x00" in name:
        assert response.status_code == 400
        assert EndpointKey.objects.count() == before
        return
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {"id", "prefix", "key"}
    key = EndpointKey.objects.get(pk=body["id"])
    assert tokens.matches(body["key"], key.digest)
    assert body["key"].startswith(f"mdi_{key.prefix}_")
    assert body["key"] not in str(EndpointKey.objects.filter(pk=key.pk).values().get())
    listing = client.get(f"/api/v1/endpoints/{endpoint.name}/keys/").json()
    assert "results" in listing and listing["count"] == EndpointKey.objects.count()
    assert body["key"] not in str(listing) and key.digest not in str(listing)
    assert {row["prefix"] for row in listing["results"]} >= {key.prefix}


@settings(max_examples=20, suppress_health_check=FIXTURES, deadline=None)
@given(who=st.sampled_from([*Role.values, "outsider"]), value=st.booleans())
def test_revoking_and_switching_the_requirement_follow_the_roles(
    endpoint, people, team, other_team, admin_member, who, value
):
    key, _plain = access.endpoint_key_create(actor=actor_for(admin_member), endpoint=endpoint)
    client = client_for(people, who, team, other_team)
    allowed = who in (Role.DEPLOYER, Role.ADMIN)
    expected = 204 if allowed else (404 if who == "outsider" else 403)
    response = client.delete(f"/api/v1/endpoints/{endpoint.name}/keys/{key.pk}/")
    assert response.status_code == expected
    key.refresh_from_db()
    assert key.is_active is not allowed
    before = Endpoint.objects.get(pk=endpoint.pk).require_key
    response = client.put(f"/api/v1/endpoints/{endpoint.name}/", {"require_key": value}, "json")
    assert response.status_code == (200 if allowed else expected)
    now = Endpoint.objects.get(pk=endpoint.pk).require_key
    assert now == (value if allowed else before)
    if allowed:
        assert response.json()["require_key"] is value
    for bad in ({"require_key": "maybe"}, {}, {"require_key": None}):
        if allowed:
            assert client.put(f"/api/v1/endpoints/{endpoint.name}/", bad, "json").status_code == 400
    Endpoint.objects.filter(pk=endpoint.pk).update(require_key=False)


def test_a_key_of_another_endpoint_cannot_be_revoked_through_this_one(endpoint, admin_member, team):
    other = Endpoint.objects.create(team=team, name="other", target=endpoint.target)
    key, _plain = access.endpoint_key_create(actor=actor_for(admin_member), endpoint=other)
    client = token_client(admin_member, team)
    response = client.delete(f"/api/v1/endpoints/{endpoint.name}/keys/{key.pk}/")
    assert response.status_code == 404
    key.refresh_from_db()
    assert key.is_active


def test_the_endpoint_page_creates_shows_once_and_revokes_keys(endpoint, admin_member):
    client = session_client(admin_member)
    page = client.get(f"/endpoints/{endpoint.name}/").content.decode()
    assert "API keys" in page and "No keys yet." in page
    created = client.post(f"/endpoints/{endpoint.name}/keys/", {"name": "web"})
    assert created.status_code == 200
    assert created["Cache-Control"] == "no-store"
    key = EndpointKey.objects.get()
    plain = created.content.decode().split('<pre id="new-key">')[1].split("</pre>")[0]
    assert tokens.matches(plain, key.digest)
    page = client.get(f"/endpoints/{endpoint.name}/").content.decode()
    assert f"mdi_{key.prefix}_" in page and plain not in page
    assert 'data-confirm="Revoke key' in page
    assert client.get(f"/endpoints/{endpoint.name}/keys/{key.pk}/revoke/").status_code == 405
    client.post(f"/endpoints/{endpoint.name}/keys/{key.pk}/revoke/")
    key.refresh_from_db()
    assert not key.is_active
    client.post(f"/endpoints/{endpoint.name}/require-key/", {"require_key": "true"})
    assert Endpoint.objects.get(pk=endpoint.pk).require_key is True
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"endpoint.key.create", "endpoint.key.revoke", "endpoint.require_key"} <= actions
