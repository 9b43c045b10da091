"""The broker down for 30 s loses no accepted deploy: the API answers 202, the release is in the
database, and once the broker is back the beat job enqueues the reconcile.

A real redis-server of the test's own, on a free port, so the test can stop and restart it.
"""

import base64
import json
import time

import pytest
import redis

from deployments.models import Endpoint, Release
from deployments.tasks import reconcile_all
from tests.conftest import token_client
from tests.faults.processes import broker_of_this_process
from tests.faults.processes import free_port as _free_port
from tests.faults.processes import reset_broker_connections as _reset_connections
from tests.faults.processes import start_redis as _start_redis

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.fault, pytest.mark.slow]

OUTAGE_SECONDS = 30


@pytest.fixture
def own_broker(tmp_path):
    port = _free_port()
    process = _start_redis(port, tmp_path)
    url = f"redis://127.0.0.1:{port}/0"
    state = {"process": process, "port": port, "url": url}
    with broker_of_this_process(url):
        yield state
    state["process"].kill()
    state["process"].wait()


def _queued_reconciles(port: int) -> list[tuple[str, list]]:
    """(task name, args) of every message waiting in the default queue."""
    found = []
    for raw in redis.Redis(port=port).lrange("celery", 0, -1):
        message = json.loads(raw)
        args = json.loads(base64.b64decode(message["body"]))[0]
        found.append((message["headers"]["task"], args))
    return found


def test_a_deploy_accepted_while_the_broker_is_down_is_reconciled_when_it_returns(
    own_broker, versions, dev_target, deployer, team, tmp_path
):
    from deployments import services
    from tests.conftest import actor_for

    endpoint = services.endpoint_create(
        actor=actor_for(deployer), name="outage", target=dev_target, version=versions[1]
    )
    redis.Redis(port=own_broker["port"]).delete("celery")
    client = token_client(deployer, team)

    own_broker["process"].kill()
    own_broker["process"].wait()
    down_at = time.monotonic()
    started = time.monotonic()
    response = client.post(
        f"/api/v1/endpoints/{endpoint.name}/deploy/",
        {"version": "adder:2", "weight": 100},
        format="json",
    )
    answered_in = time.monotonic() - started
    assert response.status_code == 202, response.content
    assert answered_in < 15, answered_in  # the request does not hang on the dead broker
    number = response.json()["release"]
    endpoint.refresh_from_db()
    assert endpoint.desired_release.number == number
    assert Release.objects.filter(endpoint=endpoint, number=number).exists()

    time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))
    own_broker["process"] = _start_redis(own_broker["port"], tmp_path)
    _reset_connections()  # connections of the dead server; fresh ones to the restarted one

    # Beat's periodic job, as it runs once the broker is back.
    assert reconcile_all() >= 1
    queued = _queued_reconciles(own_broker["port"])
    assert ("deployments.tasks.reconcile_endpoint", [endpoint.pk]) in queued, queued
    assert Endpoint.objects.get(pk=endpoint.pk).desired_release.number == number
