import pytest

from accounts.actor import Actor
from accounts.models import ApiToken, AuditEvent
from accounts.services import audit_record

pytestmark = pytest.mark.django_db


def test_login_then_home(client, scientist):
    response = client.post(
        "/accounts/login/",
        {"username": "sam-scientist", "password": "correct horse battery staple"},
    )
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.get("/").status_code == 200


def test_login_with_a_wrong_password_stays_on_the_form(client, scientist):
    response = client.post("/accounts/login/", {"username": "sam-scientist", "password": "nope"})
    assert response.status_code == 200
    assert b"Please enter a correct username and password" in response.content


def test_there_is_no_public_signup(client):
    assert client.get("/accounts/signup/").status_code == 404


def test_audit_page_lists_only_the_user_teams(client, scientist, team, other_team):
    audit_record(actor=Actor.system("t"), action="model.create", team=team, data={})
    audit_record(actor=Actor.system("t"), action="secret.other-team", team=other_team)
    client.force_login(scientist)
    body = client.get("/accounts/audit/").content.decode()
    assert "model.create" in body
    assert "secret.other-team" not in body


def test_token_page_shows_a_new_token_once_and_revokes_it(client, scientist, team):
    client.force_login(scientist)
    response = client.post("/accounts/tokens/", {"team": team.pk, "name": "laptop", "days": 30})
    token = ApiToken.objects.get()
    body = response.content.decode()
    assert f"mdk_{token.prefix}_" in body
    assert f"mdk_{token.prefix}_" not in client.get("/accounts/tokens/").content.decode()
    response = client.post(f"/accounts/tokens/{token.pk}/revoke/")
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert list(AuditEvent.objects.values_list("action", flat=True).order_by("id")) == [
        "token.create",
        "token.revoke",
    ]


def test_token_revoke_of_another_users_token_is_404(client, scientist, deployer, team):
    from accounts.services import token_create

    token, _ = token_create(actor=Actor.system("t"), user=deployer, team=team, name="theirs")
    client.force_login(scientist)
    assert client.post(f"/accounts/tokens/{token.pk}/revoke/").status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


def test_pages_send_security_headers(client, scientist):
    client.force_login(scientist)
    response = client.get("/")
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert (
        "'unsafe-inline'"
        not in response["Content-Security-Policy"].split("script-src")[1].split(";")[0]
    )
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
