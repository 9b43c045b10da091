"""Single sign-on against a real OpenID Connect provider (django-oauth-toolkit, own process)."""

import json
import os
import re
import subprocess
import sys
import uuid

import httpx
import pytest
from django.contrib.auth import get_user_model
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from accounts.models import AuditEvent, ExternalIdentity, Membership, Role
from accounts.services import sso_roles_from_claim, sso_sign_in, token_create
from tests.conftest import actor_for
from tests.factories import MembershipFactory, TeamFactory, UserFactory
from tests.oidc_provider.server import ROOT, Provider

TEAM_MAP = {
    "ml-admins": [("ml-platform", "admin")],
    "ml-users": [("ml-platform", "viewer"), ("vision", "scientist")],
    "vision-deployers": [("vision", "deployer")],
}
ALICE = {"username": "alice", "password": "alice-pass-1", "email": "alice@example.org"}


@pytest.fixture(scope="module")
def provider(live_server, tmp_path_factory):
    running = Provider(
        state_dir=tmp_path_factory.mktemp("oidc-provider"),
        redirect_uris=[f"{live_server.url}/oidc/callback/"],
    )
    running.start(users=[{**ALICE, "groups": ["ml-admins", "ml-users", "unmapped"]}])
    yield running
    running.stop()


@pytest.fixture
def sso(settings, provider):
    """Modeldeck configured the way the README tells an operator to, passwords off."""
    for name, value in provider.relying_party_settings().items():
        setattr(settings, name, value)
    settings.OIDC_ENABLED = True
    settings.OIDC_TEAM_ROLE_MAP = TEAM_MAP
    settings.LOCAL_PASSWORDS_ENABLED = False
    settings.AUTHENTICATION_BACKENDS = [
        "axes.backends.AxesStandaloneBackend",
        "accounts.oidc.SignInBackend",
    ]
    return provider


def _sign_in_through_provider(client: httpx.Client, base: str, username: str, password: str):
    start = client.get(f"{base}/oidc/authenticate/", params={"next": "/models/"})
    # The provider asks for the password on its own login page.
    assert start.status_code == 200 and "Test identity provider" in start.text, start.text
    csrf = client.cookies.get("provider_csrftoken")
    next_url = re.search(r'name="next" value="([^"]*)"', start.text).group(1)
    return client.post(
        str(start.url),
        data={
            "username": username,
            "password": password,
            "next": next_url.replace("&amp;", "&"),
            "csrfmiddlewaretoken": csrf,
        },
    )


@pytest.mark.django_db(transaction=True)
def test_code_flow_signs_in_creates_the_user_and_syncs_mapped_teams(sso, live_server):
    other = TeamFactory(name="research")
    with httpx.Client(follow_redirects=True, timeout=30) as client:
        landed = _sign_in_through_provider(client, live_server.url, "alice", ALICE["password"])
        assert landed.status_code == 200
        assert landed.url.path == "/models/"
        assert landed.url.port == int(live_server.url.rsplit(":", 1)[1])
        dashboard = client.get(f"{live_server.url}/")
        assert "You are not in a team yet" not in dashboard.text
        assert "Sign out alice" in dashboard.text
    user = get_user_model().objects.get(username="alice")
    assert user.email == "alice@example.org"
    assert not user.has_usable_password()
    identity = ExternalIdentity.objects.get(user=user)
    assert identity.issuer == sso.discovery["issuer"]
    assert dict(Membership.objects.filter(user=user).values_list("team__name", "role")) == {
        "ml-platform": Role.ADMIN,
        "vision": Role.SCIENTIST,
    }
    assert not Membership.objects.filter(user=user, team=other).exists()
    actions = sorted(
        AuditEvent.objects.filter(actor=user).values_list("action", "team__name", "source_ip")
    )
    assert actions == [
        ("membership.set", "ml-platform", "127.0.0.1"),
        ("membership.set", "vision", "127.0.0.1"),
        ("user.create", None, "127.0.0.1"),
    ]


@pytest.mark.django_db(transaction=True)
def test_wrong_password_at_the_provider_signs_nobody_in(sso, live_server):
    with httpx.Client(follow_redirects=True, timeout=30) as client:
        answer = _sign_in_through_provider(client, live_server.url, "alice", "not-it")
        assert "Wrong username or password." in answer.text
        assert client.get(f"{live_server.url}/").url.path == "/accounts/login/"
    assert not get_user_model().objects.filter(username="alice").exists()


@pytest.mark.django_db(transaction=True)
def test_a_forged_callback_signs_nobody_in(sso, live_server):
    with httpx.Client(follow_redirects=True, timeout=30) as client:
        client.get(f"{live_server.url}/oidc/authenticate/")  # a real state in the session
        forged = client.get(
            f"{live_server.url}/oidc/callback/", params={"code": "made-up", "state": "made-up"}
        )
        assert forged.status_code == 400
        assert client.get(f"{live_server.url}/").url.path == "/accounts/login/"
    assert get_user_model().objects.count() == 0


@pytest.mark.django_db
def test_with_local_passwords_off_the_login_page_offers_only_sso_and_refuses_passwords(
    sso, client, team
):
    user = UserFactory(username="pat")
    user.set_password("pat-password-1")
    user.save()
    MembershipFactory(user=user, team=team, role=Role.ADMIN)
    page = client.get("/accounts/login/")
    assert page.status_code == 200
    assert b'id="sso-sign-in"' in page.content
    assert b'name="password"' not in page.content
    refused = client.post("/accounts/login/", {"username": "pat", "password": "pat-password-1"})
    assert refused.status_code == 403
    assert b"Password sign-in is turned off" in refused.content
    assert "_auth_user_id" not in client.session
    # The admin site's own form cannot check a password either (no password backend).
    client.post("/admin/login/", {"username": "pat", "password": "pat-password-1"})
    assert "_auth_user_id" not in client.session
    # API tokens keep working.
    _row, plain = token_create(actor=actor_for(user), user=user, team=team, name="ci")
    api = APIClient()
    assert api.get("/api/v1/models/", HTTP_AUTHORIZATION=f"Bearer {plain}").status_code == 200


def test_the_settings_drop_the_password_backend_when_local_passwords_are_off(sso):
    env = {
        **{k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
        **sso.relying_party_settings(),
        "DEBUG": "true",
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "LOCAL_PASSWORDS_ENABLED": "false",
        "OIDC_TEAM_ROLE_MAP": json.dumps({"ml-admins": "ml-platform:admin"}),
    }
    code = (
        "import django, json; django.setup(); from django.conf import settings as s; "
        "print(json.dumps([s.AUTHENTICATION_BACKENDS, s.OIDC_TEAM_ROLE_MAP]))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert output.returncode == 0, output.stderr
    backends, team_map = json.loads(output.stdout.strip().splitlines()[-1])
    assert backends == ["axes.backends.AxesStandaloneBackend", "accounts.oidc.SignInBackend"]
    assert team_map == {"ml-admins": [["ml-platform", "admin"]]}
    env["OIDC_TEAM_ROLE_MAP"] = json.dumps({"ml-admins": "ml-platform:owner"})
    refused = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert refused.returncode != 0
    assert "is not 'team:role'" in refused.stderr


groups = st.lists(st.sampled_from([*TEAM_MAP, "unmapped", "ML-ADMINS"]), max_size=5)


@hypothesis_settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(first=groups, second=groups)
@pytest.mark.django_db
def test_memberships_in_mapped_teams_follow_the_claim_and_others_stay(settings, first, second):
    settings.OIDC_TEAM_ROLE_MAP = TEAM_MAP
    subject = uuid.uuid4().hex
    user = sso_sign_in(
        issuer="https://idp.example", subject=subject, claims={"groups": first}, ip=None
    )
    # A team the map does not name, granted with addmember, is never touched by sign-in.
    research = TeamFactory(name=f"research-{user.pk}")
    MembershipFactory(user=user, team=research, role=Role.DEPLOYER)
    again = sso_sign_in(
        issuer="https://idp.example",
        subject=subject,
        claims={"groups": second, "preferred_username": "ignored-the-second-time"},
        ip="192.0.2.7",
    )
    assert again.pk == user.pk
    expected = {}
    for group in second:
        for team_name, role in TEAM_MAP.get(group, []):
            if team_name not in expected or Role.rank(role) > Role.rank(expected[team_name]):
                expected[team_name] = role
    assert sso_roles_from_claim(second) == expected
    held = dict(Membership.objects.filter(user=user).values_list("team__name", "role"))
    assert held == {**expected, research.name: Role.DEPLOYER}


@pytest.mark.django_db
def test_a_provider_username_never_takes_over_a_local_user(settings):
    settings.OIDC_TEAM_ROLE_MAP = TEAM_MAP
    local = UserFactory(username="root")
    created = sso_sign_in(
        issuer="https://idp.example",
        subject="someone-else",
        claims={"preferred_username": "root", "groups": ["ml-admins"]},
        ip=None,
    )
    assert created.pk != local.pk
    assert created.username.startswith("root-")
    assert not Membership.objects.filter(user=local).exists()


@hypothesis_settings(max_examples=20, deadline=None)
@given(
    issuer=st.sampled_from(["https://idp.example", "https://evil.example", ""]),
    audience=st.one_of(
        st.sampled_from(["modeldeck", "another-client"]),
        st.lists(st.sampled_from(["modeldeck", "another-client", "third"]), max_size=3),
        st.none(),
    ),
)
def test_id_tokens_of_another_issuer_or_client_are_refused(issuer, audience):
    from django.core.exceptions import SuspiciousOperation
    from django.test import RequestFactory, override_settings

    from accounts.oidc import SignInBackend

    accepted = issuer == "https://idp.example" and (
        audience == "modeldeck" or (isinstance(audience, list) and "modeldeck" in audience)
    )
    with override_settings(
        OIDC_OP_ISSUER="https://idp.example",
        OIDC_RP_CLIENT_ID="modeldeck",
        OIDC_OP_JWKS_ENDPOINT="https://idp.example/jwks",
    ):
        backend = SignInBackend()
        backend.request = RequestFactory().get("/oidc/callback/")
        seen = []
        backend.get_userinfo = lambda *args: seen.append(args) or {"sub": "someone-else"}
        payload = {"iss": issuer, "aud": audience, "sub": "s-1"}
        with pytest.raises(SuspiciousOperation) as refused:
            backend.get_or_create_user("access", "id-token", payload)
    # A token for this client from this issuer gets as far as userinfo (whose other subject is
    # refused next); any other token is refused before the provider is asked anything.
    assert bool(seen) == accepted
    assert ("subject differs" in str(refused.value)) == accepted
