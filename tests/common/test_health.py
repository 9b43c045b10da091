import pytest


@pytest.mark.django_db
def test_healthz_answers_ok_without_login(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_home_redirects_anonymous_to_login(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/"


def test_signed_out_api_docs_send_to_sign_in(client, django_user_model):
    answer = client.get("/api/docs/")
    assert answer.status_code == 302
    assert answer["Location"] == "/accounts/login/?next=/api/docs/"
    user = django_user_model.objects.create_user("docs-reader", password="pw-docs-123")
    client.force_login(user)
    page = client.get("/api/docs/")
    assert page.status_code == 200
    assert b"swagger" in page.content.lower()
