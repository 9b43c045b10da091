"""Every route refuses anonymous callers, except the few that must not.

The test walks the whole URL resolver, so a route added without anyone deciding who may call it
makes this test fail.
"""

import pytest

from tests.security.routes import all_routes

# Routes that answer anonymous callers on purpose.
PUBLIC_ROUTES = {
    "/healthz",
    "/accounts/login/",
    "/admin/login/",
    # Signing out an anonymous session changes nothing and redirects to the login page.
    "/accounts/logout/",
    "/admin/logout/",
    # Edge devices authenticate with their own device token or enrollment code, checked inside.
}
PUBLIC_PREFIXES = ("/static/",)


def _is_login_redirect(response) -> bool:
    if response.status_code not in (301, 302):
        return False
    location = response["Location"]
    return location.startswith(("/accounts/login/", "/admin/login/"))


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["get", "post"])
def test_every_route_refuses_anonymous_callers(client, method):
    routes = all_routes()
    assert len(routes) > 20, routes  # the walk found the app's routes
    unclassified = []
    for route in routes:
        if route in PUBLIC_ROUTES or route.startswith(PUBLIC_PREFIXES):
            continue
        response = getattr(client, method)(route)
        if response.status_code in (401, 403) or _is_login_redirect(response):
            continue
        unclassified.append(f"{method.upper()} {route} -> {response.status_code}")
    assert unclassified == []


@pytest.mark.django_db
def test_public_routes_answer_anonymous_callers(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/accounts/login/").status_code == 200
    assert client.get("/admin/login/").status_code == 200
