"""When a gateway cannot deliver its prediction log (the dashboard moved), the endpoint page
says so; when it can, the page says nothing. Real gateway, real version server, real HTTP."""

import socket
import time
from datetime import timedelta

import httpx
import pytest

from deployments import services as deployment_services
from deployments import tasks as deployment_tasks
from monitoring import selectors, tasks
from monitoring.models import PredictionRecord
from tests.deployments import conftest as deployment_fixtures

adder_model = deployment_fixtures.adder_model
versions = deployment_fixtures.versions
dev_target = deployment_fixtures.dev_target
runtime_processes = deployment_fixtures.runtime_processes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}]}


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(endpoint, requests: int) -> None:
    with httpx.Client(timeout=10) as client:
        for _ in range(requests):
            response = client.post(f"{endpoint.url}/v2/models/{endpoint.name}/infer", json=BODY)
            assert response.status_code == 200
    tasks.scrape_all()


def page(client, user, endpoint) -> str:
    client.force_login(user)
    response = client.get(f"/endpoints/{endpoint.name}/")
    assert response.status_code == 200
    return response.content.decode()


@pytest.fixture
def no_grace(monkeypatch):
    # The page waits two minutes before judging a minute's requests; the test cannot.
    monkeypatch.setattr(selectors, "PREDICTION_LOG_GRACE", timedelta(0))


def test_a_gateway_posting_to_a_dashboard_that_moved_shows_on_the_endpoint_page(
    versions, dev_target, deployer, make_actor, runtime_processes, settings, client, no_grace
):
    moved = f"http://127.0.0.1:{closed_port()}"
    settings.MODELDECK_INTERNAL_URL = moved
    endpoint = deployment_services.endpoint_create(
        actor=make_actor(deployer), name="moved", target=dev_target, version="adder:1"
    )
    assert deployment_tasks.reconcile_endpoint(endpoint.pk) == "converged"
    endpoint.refresh_from_db()
    assert "prediction-log-delivery" not in page(client, deployer, endpoint)  # no traffic yet

    serve(endpoint, 5)

    html = page(client, deployer, endpoint)
    assert "The gateway's prediction log does not reach the dashboard." in html
    assert "no log record has arrived" in html
    assert f"<code>{moved}/api/v1/endpoints/moved/predictions/</code>" in html
    assert PredictionRecord.objects.filter(endpoint=endpoint).count() == 0


def test_a_gateway_that_delivers_its_log_leaves_the_page_quiet(
    versions, dev_target, deployer, make_actor, runtime_processes, settings, client, no_grace,
    live_server,
):  # fmt: skip
    settings.MODELDECK_INTERNAL_URL = live_server.url
    endpoint = deployment_services.endpoint_create(
        actor=make_actor(deployer), name="delivering", target=dev_target, version="adder:1"
    )
    assert deployment_tasks.reconcile_endpoint(endpoint.pk) == "converged"
    endpoint.refresh_from_db()

    serve(endpoint, 5)
    deadline = time.monotonic() + 15
    while (
        time.monotonic() < deadline
        and PredictionRecord.objects.filter(endpoint=endpoint).count() < 5
    ):
        time.sleep(0.2)
    assert PredictionRecord.objects.filter(endpoint=endpoint).count() == 5

    delivery = selectors.prediction_log_delivery(endpoint=endpoint)
    assert delivery["delivered"] is True
    assert "prediction-log-delivery" not in page(client, deployer, endpoint)
