"""Every input has a bound: oversized bodies, long names, many tags and huge lists get a 4xx,
never a 500, and nothing is written."""

import json

import pytest

from tests.security.world import changed_tables, project_routes, snapshot

pytestmark = pytest.mark.django_db

HUGE = "x" * 100_000


def _oversized_bodies(world):
    variants = [{"version": f"{world.model.name}:1", "weight": 1, "role": "candidate"}] * 5_000
    return {
        "/api/v1/models/": [
            {"name": "a" * 10_000},
            {"name": "ok-name", "description": HUGE},
            {"name": "ok-name", "tags": {f"k{i}": "v" for i in range(5_000)}},
            {"name": "ok-name", "tags": {"k": HUGE}},
            {"name": "ok-name", "tags": {HUGE: "v"}},
            {"name": ["a"] * 100_000},
            {"name": {"nested": [[[[[[[[[[1]]]]]]]]]]}},
        ],
        "/api/v1/endpoints/{name}/traffic/": [{"variants": variants}, {"variants": HUGE}],
        "/api/v1/endpoints/{name}/deploy/": [
            {"version": HUGE},
            {"version": f"{world.model.name}:1", "strategy": [{"weight": 1}] * 10_000},
            {"version": f"{world.model.name}:99999999999999999999"},
        ],
        "/api/v1/endpoints/{name}/rollback/": [{"release": 10**30}, {"release": -1}],
        "/api/v1/endpoints/": [{"name": "e" * 5_000, "target": "t", "version": "m:1"}],
        "/api/v1/models/{model_name}/aliases/{alias}/": [{"version": 10**30}],
        "/api/v1/models/{model_name}/versions/{number}/approve/": [
            {"decision": "approved", "comment": HUGE}
        ],
        "/api/v1/targets/": [
            {"name": "t", "kind": "local", "config": {f"k{i}": i for i in range(10_000)}}
        ],
    }


def test_oversized_and_deep_json_is_refused_with_a_4xx(world, api_for):
    client = api_for(world.owner, world.team)
    routes = {r.template: r for r in project_routes()}
    before = snapshot()
    wrong = []
    for template, bodies in _oversized_bodies(world).items():
        route = routes[template]
        method = "put" if "aliases/{alias}" in template else "post"
        for body in bodies:
            response = getattr(client, method)(
                route.fill(world.values), json.dumps(body), content_type="application/json"
            )
            if not 400 <= response.status_code < 500:
                wrong.append(f"{template} {str(body)[:60]} -> {response.status_code}")
    assert wrong == []
    assert changed_tables(before, snapshot()) == []


def test_a_body_past_the_upload_cap_is_refused_before_parsing(world, api_for, settings):
    client = api_for(world.owner, world.team)
    body = json.dumps({"name": "ok-name", "description": "x" * (3 * 1024 * 1024)})
    response = client.post("/api/v1/models/", body, content_type="application/json")
    assert response.status_code in (400, 413)


def test_deeply_nested_json_does_not_crash_the_parser(world, api_for):
    client = api_for(world.owner, world.team)
    body = "[" * 100_000 + "]" * 100_000
    response = client.post("/api/v1/models/", body, content_type="application/json")
    assert 400 <= response.status_code < 500


def test_long_query_strings_and_page_numbers_are_bounded(world):
    from django.test import Client

    client = Client()
    client.force_login(world.owner)
    wrong = []
    for route in project_routes():
        if route.parameters or route.template in ("/accounts/logout/", "/api/schema/"):
            continue
        for query in (f"?q={HUGE}&tag={HUGE}", "?page=99999999999999999999", "?page=-1"):
            response = client.get(route.template + query)
            if response.status_code >= 500:
                wrong.append(f"{route.template}{query[:20]} -> {response.status_code}")
    assert wrong == []


def test_page_forms_bound_their_fields(world):
    from django.test import Client

    client = Client()
    client.force_login(world.owner)
    before = snapshot()
    response = client.post(
        "/models/_new/", {"team": world.team.name, "name": "n" * 5000, "description": HUGE}
    )
    assert response.status_code in (200, 400)
    response = client.post(
        f"/models/{world.model.name}/aliases/",
        {"name": "a" * 5000, "version": 10**30, "reason": HUGE},
    )
    assert response.status_code in (302, 400)
    assert changed_tables(before, snapshot()) == []
