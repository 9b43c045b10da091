from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from accounts import tokens
from accounts.actor import Actor
from accounts.models import ApiToken, AuditEvent
from accounts.services import token_create, token_revoke
from common.errors import ApplicationError

pytestmark = pytest.mark.django_db


def bearer(plain: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plain}")
    return client


def test_database_never_holds_the_plain_token(scientist, team):
    token, plain = token_create(actor=Actor.system("t"), user=scientist, team=team, name="ci")
    row = ApiToken.objects.values().get(pk=token.pk)
    assert all(plain not in str(value) for value in row.values())
    secret = plain.rsplit("_", 1)[1]
    assert all(secret not in str(value) for value in row.values())
    assert row["digest"] == tokens.digest(plain)
    assert plain.startswith(f"mdk_{row['prefix']}_")


def test_valid_token_authenticates_and_sees_its_team(scientist, team):
    _token, plain = token_create(actor=Actor.system("t"), user=scientist, team=team, name="ci")
    response = bearer(plain).get("/api/v1/me/")
    assert response.status_code == 200
    assert response.json() == {"username": "sam-scientist", "teams": {"alpha": "scientist"}}


def test_token_narrows_a_user_to_the_token_team(scientist, team, other_team):
    from tests.factories import MembershipFactory

    MembershipFactory(user=scientist, team=other_team, role="admin")
    _token, plain = token_create(actor=Actor.system("t"), user=scientist, team=team, name="ci")
    assert bearer(plain).get("/api/v1/me/").json()["teams"] == {"alpha": "scientist"}


def test_revoked_token_gets_401(scientist, team):
    token, plain = token_create(actor=Actor.system("t"), user=scientist, team=team, name="ci")
    token_revoke(actor=Actor.system("t"), token=token)
    response = bearer(plain).get("/api/v1/me/")
    assert response.status_code == 401
    assert response.json()["error"] == "Token expired or revoked."


def test_expired_token_gets_401(scientist, team):
    token, plain = token_create(actor=Actor.system("t"), user=scientist, team=team, name="ci")
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert bearer(plain).get("/api/v1/me/").status_code == 401


def test_wrong_secret_with_a_real_prefix_gets_401(scientist, team):
    _token, plain = token_create(actor=Actor.system("t"), user=scientist, team=team, name="ci")
    forged = plain[:-4] + ("AAAA" if not plain.endswith("AAAA") else "BBBB")
    response = bearer(forged).get("/api/v1/me/")
    assert response.status_code == 401
    assert response.json()["error"] == "Invalid token."


@pytest.mark.parametrize("value", ["", "garbage", "mdk_short_x", "Basic abc"])
def test_malformed_tokens_get_401(scientist, value):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {value}")
    assert client.get("/api/v1/me/").status_code == 401


def test_token_in_query_string_is_refused(scientist, team):
    _token, plain = token_create(actor=Actor.system("t"), user=scientist, team=team, name="ci")
    for parameter in ("token", "access_token", "api_key"):
        response = APIClient().get(f"/api/v1/me/?{parameter}={plain}")
        assert response.status_code == 401
        assert "Authorization header" in response.json()["error"]


def test_no_credentials_gets_401_with_bearer_challenge():
    response = APIClient().get("/api/v1/me/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"


def test_token_of_a_removed_member_cannot_be_created(scientist, other_team):
    with pytest.raises(ApplicationError, match="not a member"):
        token_create(actor=Actor.system("t"), user=scientist, team=other_team, name="ci")


@pytest.mark.parametrize("days", [0, -1, 366])
def test_token_lifetime_is_bounded(scientist, team, days):
    with pytest.raises(ApplicationError, match="1 to 365 days"):
        token_create(actor=Actor.system("t"), user=scientist, team=team, name="ci", days=days)
    assert ApiToken.objects.count() == 0


def test_token_create_and_revoke_are_audited(scientist, team):
    token, _ = token_create(actor=Actor.system("t"), user=scientist, team=team, name="ci")
    token_revoke(actor=Actor.system("t"), token=token)
    token_revoke(actor=Actor.system("t"), token=token)  # a second revoke is a no-op
    actions = list(AuditEvent.objects.order_by("id").values_list("action", flat=True))
    assert actions == ["token.create", "token.revoke"]


def test_createtoken_prints_a_working_token_once(scientist, team, capsys):
    call_command("createtoken", "sam-scientist", "alpha", "--name", "pipeline", "--days", "7")
    plain = capsys.readouterr().out.strip()
    assert bearer(plain).get("/api/v1/me/").status_code == 200
    token = ApiToken.objects.get()
    assert token.name == "pipeline"
    assert (token.expires_at - timezone.now()).days == 6


def test_audit_api_shows_only_the_token_team(scientist, team, other_team):
    from accounts.services import audit_record

    audit_record(actor=Actor.system("t"), action="model.create", team=team)
    audit_record(actor=Actor.system("t"), action="model.create", team=other_team)
    _token, plain = token_create(actor=Actor.system("t"), user=scientist, team=team, name="ci")
    results = bearer(plain).get("/api/v1/audit/").json()["results"]
    assert {row["team"] for row in results} == {"alpha"}
