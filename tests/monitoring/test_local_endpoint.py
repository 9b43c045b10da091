"""The whole loop on the local target: deploy, send real requests through the gateway, let the
periodic scrape read the driver's observation, and read the same numbers on the page's API."""

import httpx
import pytest
from django.db.models import Sum

from deployments import services as deployment_services
from deployments import tasks as deployment_tasks
from monitoring import selectors, tasks
from monitoring.models import Component, MetricPoint
from tests.deployments import conftest as deployment_fixtures

# The deployments tests' fixtures: real adder versions, a local target, process cleanup.
adder_model = deployment_fixtures.adder_model
versions = deployment_fixtures.versions
dev_target = deployment_fixtures.dev_target
runtime_processes = deployment_fixtures.runtime_processes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def rolled_up(endpoint, component) -> int:
    rows = MetricPoint.objects.filter(endpoint=endpoint, component=component)
    return rows.aggregate(total=Sum("requests"))["total"] or 0


def test_a_local_canary_is_scraped_per_version(
    versions,
    dev_target,
    deployer,
    make_actor,
    runtime_processes,
    viewer_api,
):
    actor = make_actor(deployer)
    endpoint = deployment_services.endpoint_create(
        actor=actor, name="scraped", target=dev_target, version="adder:1"
    )
    deployment_services.endpoint_deploy(
        actor=actor, endpoint=endpoint, version="adder:2", weight=30
    )
    assert deployment_tasks.reconcile_endpoint(endpoint.pk) == "converged"
    endpoint.refresh_from_db()

    answered = {"adder:1": 0, "adder:2": 0}
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}]}
    with httpx.Client(timeout=10) as client:
        tasks.scrape_all()  # a first scrape, before any traffic
        for _ in range(60):
            response = client.post(f"{endpoint.url}/v2/models/{endpoint.name}/infer", json=body)
            assert response.status_code == 200
            answered[response.headers["X-Model-Version"]] += 1
        # One request that fails at the gateway (unknown pinned version): a 4xx for nobody.
        pinned = client.post(
            f"{endpoint.url}/v2/models/{endpoint.name}/infer",
            json=body,
            headers={"X-Model-Version": "adder:9"},
        )
        assert pinned.status_code == 404
    tasks.scrape_all()
    tasks.scrape_all()

    assert rolled_up(endpoint, Component.GATEWAY) == 60
    assert rolled_up(endpoint, Component.SERVER) == 60
    series = viewer_api.get(f"/api/v1/endpoints/{endpoint.name}/metrics/?range=15m").json()
    assert series["source"] == "gateway"
    by_version = {v["version"]: v["totals"]["requests"] for v in series["versions"]}
    assert by_version == answered
    share = {v["version"]: v["totals"]["traffic_share"] for v in series["versions"]}
    assert share["adder:1"] == pytest.approx(answered["adder:1"] / 60)
    health = selectors.endpoint_health(endpoint_ids=[endpoint.pk])[endpoint.pk]
    assert health["requests"] == 60
