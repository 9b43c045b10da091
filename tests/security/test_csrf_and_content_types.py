"""State changes need proof of origin: CSRF tokens on pages, JSON bodies on the API."""

import pytest
from django.test import Client

from tests.security.routes import api_routes, page_routes

pytestmark = pytest.mark.django_db

# Routes whose POST changes nothing and so needs no token.
NO_STATE_CHANGE = {"/accounts/login/"}


def test_every_page_post_without_csrf_token_is_refused(scientist):
    client = Client(enforce_csrf_checks=True)
    client.force_login(scientist)
    routes = page_routes()
    assert len(routes) > 5
    accepted = []
    for route in routes:
        if route in NO_STATE_CHANGE:
            continue
        response = client.post(route, {"name": "x", "weight": "50"})
        # 403 = CSRF refused; 405 = the route takes no POST at all.
        if response.status_code not in (403, 405):
            accepted.append(f"POST {route} -> {response.status_code}")
    assert accepted == []


def test_login_post_needs_a_csrf_token(scientist):
    client = Client(enforce_csrf_checks=True)
    response = client.post(
        "/accounts/login/",
        {"username": "sam-scientist", "password": "correct horse battery staple"},
    )
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("content_type", "body"),
    [("text/plain", '{"name": "x"}'), ("application/x-www-form-urlencoded", "name=x")],
)
def test_api_refuses_non_json_bodies_even_with_a_valid_token(scientist_api, content_type, body):
    accepted = []
    routes = api_routes()
    assert len(routes) > 1
    for route in routes:
        for method in ("post", "put", "patch"):
            response = getattr(scientist_api, method)(route, data=body, content_type=content_type)
            # 415 is the refusal; 404/405/403 mean the route never got to read the body.
            if response.status_code < 400 or response.status_code >= 500:
                accepted.append(f"{method.upper()} {route} -> {response.status_code}")
    assert accepted == []


def test_api_session_calls_need_a_csrf_token(scientist):
    client = Client(enforce_csrf_checks=True)
    client.force_login(scientist)
    response = client.post("/api/v1/models/", data='{"name": "m"}', content_type="application/json")
    assert response.status_code == 403


@pytest.mark.parametrize("host", ["evil.example.com", "127.0.0.1.evil.com", "localhost:8000@evil"])
def test_disallowed_host_headers_get_400(client, host):
    response = client.get("/healthz", HTTP_HOST=host)
    assert response.status_code == 400
