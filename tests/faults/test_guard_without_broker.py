"""The broker is dead and no worker runs: `manage.py guard --once`, a process of its own, still
scrapes a canary that errors on a fifth of its inputs, judges it by the endpoint's rollback
policy, rolls it back and converges the endpoint, so the old version serves real requests again.
"""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from django.conf import settings

from deployments import reconciler
from deployments import services as deployment_services
from deployments import tasks as deployment_tasks
from monitoring import services
from monitoring.models import EvaluationAction, MetricPoint, PolicyEvaluation
from tests.faults.processes import broker_of_this_process, database_url, free_port
from tests.monitoring.test_guardrails_local import POLICY, flaky_version, routed_versions, send

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.fault, pytest.mark.slow]


@pytest.fixture
def dead_broker():
    """A broker URL with nothing listening, for this process and the guard's."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with broker_of_this_process(url):
        yield {"url": url, "port": port}


def run_guard_once(broker_url: str) -> subprocess.CompletedProcess:
    """`manage.py guard --once` against this test's database and runtime folder."""
    dropped = {"DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL",
               reconciler.PAUSE_ENVIRONMENT, reconciler.PAUSE_FILE_ENVIRONMENT}  # fmt: skip
    environment = {
        **{key: value for key, value in os.environ.items() if key not in dropped},
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": broker_url,
        "LOCAL_TARGET_PORT_RANGE": settings.LOCAL_TARGET_PORT_RANGE,
        "DEPLOYMENTS_DRAIN_SECONDS": "0.5",
        "DEPLOYMENTS_READY_TIMEOUT_SECONDS": "45",
    }
    return subprocess.run(
        [sys.executable, "manage.py", "guard", "--once"],
        cwd=settings.BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_guard_rolls_back_a_failing_canary_with_the_broker_down_and_no_worker(
    dead_broker, versions, adder_model, dev_target, deployer, make_actor, runtime_processes
):
    flaky_version(adder_model, 4)
    actor = make_actor(deployer)
    endpoint = deployment_services.endpoint_create(
        actor=actor, name="unbrokered", target=dev_target, version="adder:1"
    )
    # The on-commit enqueues of this test went nowhere; converge by hand as a worker would have.
    assert deployment_tasks.reconcile_endpoint(endpoint.pk) == "converged"
    services.rollback_policy_set(actor=actor, endpoint=endpoint, **POLICY)
    canary = deployment_services.endpoint_deploy(
        actor=actor,
        endpoint=endpoint,
        version="adder:4",
        strategy=[{"weight": 50, "bake_seconds": 600}, {"weight": 100, "bake_seconds": 0}],
    )
    assert deployment_tasks.reconcile_endpoint(endpoint.pk) == "converged"
    endpoint.refresh_from_db()
    assert endpoint.live_release_id == canary.pk
    assert routed_versions(endpoint) == ["adder:1", "adder:4"]
    answered = send(endpoint, np.tile(np.arange(5, dtype=float), 40))  # x = 4: a fifth fail
    assert 500 in answered["adder:4"] and set(answered["adder:1"]) == {200}
    assert not MetricPoint.objects.filter(endpoint=endpoint).exists()  # nothing scraped yet
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", dead_broker["port"]), timeout=2),
    ):
        pass  # the broker is really down

    guard = run_guard_once(dead_broker["url"])

    assert guard.returncode == 0, guard.stderr[-4000:]
    assert guard.stdout == "scraped 1 endpoints, 1 evaluations, 1 rollbacks\n"
    # The rollback tried to enqueue the usual reconcile, failed, and converged inline anyway.
    assert "could not enqueue reconcile" in guard.stderr
    evaluation = PolicyEvaluation.objects.get(endpoint=endpoint)
    assert evaluation.action == EvaluationAction.ROLLED_BACK, evaluation.message
    assert evaluation.release_number == canary.number
    assert evaluation.results[0]["value"] == pytest.approx(
        answered["adder:4"].count(500) / len(answered["adder:4"])
    )
    endpoint.refresh_from_db()
    rollback = endpoint.desired_release
    assert (rollback.reason, rollback.restores.number) == ("rollback", 1)
    assert rollback.number == evaluation.rollback_release_number
    assert f"Guardrail evaluation {evaluation.pk}" in rollback.note
    assert (endpoint.status, endpoint.live_release_id) == ("live", rollback.pk)
    assert routed_versions(endpoint) == ["adder:1"]
    after = send(endpoint, [4.0] * 5 + [0.0] * 5)
    assert after == {"adder:1": [200] * 10}
