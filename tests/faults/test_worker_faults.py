"""A real Celery worker killed or stopped in the middle of a deploy on the local target.

The deploy goes through the API (202 + a reconcile enqueued on commit to a private Redis); the
worker (`celery -A config worker`) holds at a named reconcile step through the reconciler's
fault hook, and the test kills it there. Then a fresh worker (and beat's `reconcile_all`, where
the message is gone) must bring the endpoint to the new release, answering real inference at
its URL, with every serving process owned by a row.
"""

from __future__ import annotations

import os
import signal

import httpx
import pytest
from django.db import connection

from deployments import services, tasks
from deployments.models import Endpoint, EndpointStatus, LocalProcess, ReconcileLease
from deployments.targets import driver_for
from deployments.targets.base import ResourceRole
from tests.deployments.conftest import running_markers
from tests.faults.processes import (
    Pause,
    wait_for,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.fault, pytest.mark.slow]


@pytest.fixture
def live_endpoint(versions, dev_target, system, broker, runtime_processes):
    """`faulty` live on release 1 (adder:1), converged here; no message left in the queue."""
    endpoint = services.endpoint_create(
        actor=system, name="faulty", target=dev_target, version="adder:1"
    )
    assert tasks.reconcile_endpoint(endpoint.pk) == "converged"
    broker["redis"].delete("celery")
    endpoint.refresh_from_db()
    return endpoint


def deploy(client, endpoint: Endpoint, version: str) -> int:
    response = client.post(
        f"/api/v1/endpoints/{endpoint.name}/deploy/", {"version": version}, format="json"
    )
    assert response.status_code == 202, response.content
    return response.json()["release"]


def wait_live(endpoint: Endpoint, release: int, *, workers=(), seconds: float = 90) -> None:
    def live():
        state = Endpoint.objects.filter(pk=endpoint.pk).values_list(
            "status", "live_release__number"
        )
        return state.get() == (EndpointStatus.LIVE, release)

    try:
        wait_for(live, seconds=seconds, what=f"{endpoint.name} live on release {release}")
    except pytest.fail.Exception:
        endpoint.refresh_from_db()
        logs = "\n".join(worker.log()[-3000:] for worker in workers)
        pytest.fail(f"{endpoint.status}: {endpoint.status_reason}\n{logs}")


def infer_version(endpoint: Endpoint) -> str:
    response = httpx.post(
        f"{endpoint.url}/v2/models/{endpoint.name}/infer",
        json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [0.0]}]},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.headers["X-Model-Version"]


def assert_nothing_orphaned(target) -> None:
    """The driver finds no process without a row, and every row's process runs."""
    owned = driver_for(target).list_owned()
    assert [resource for resource in owned if resource.orphaned] == []
    assert set(running_markers()) == set(LocalProcess.objects.values_list("marker", flat=True))


def assert_converged(endpoint: Endpoint, *, release: int, version: str) -> None:
    """Live on `release`, answering with `version`, exactly its gateway and server running."""
    endpoint.refresh_from_db()
    assert endpoint.status == EndpointStatus.LIVE, endpoint.status_reason
    assert (endpoint.live_release.number, endpoint.desired_release.number) == (release, release)
    assert {infer_version(endpoint) for _ in range(5)} == {version}
    version_id = endpoint.desired_release.variants[0]["version_id"]
    mine = sorted(
        (str(resource.role), resource.version_id)
        for resource in driver_for(endpoint.target).list_owned()
        if resource.endpoint_id == endpoint.pk
    )
    assert mine == [(ResourceRole.GATEWAY.value, None), (ResourceRole.SERVER.value, version_id)]
    assert_nothing_orphaned(endpoint.target)
    assert not ReconcileLease.objects.filter(endpoint=endpoint).exists()


@pytest.mark.parametrize("step", ["server-started", "routes-set"])
def test_worker_sigkilled_mid_deploy_then_a_fresh_worker_converges(
    step, live_endpoint, start_worker, deployer_api, tmp_path
):
    pause = Pause(tmp_path, step)
    first = start_worker("first", pause.environment)
    release = deploy(deployer_api, live_endpoint, "adder:2")
    pause.wait_paused(first)
    first.kill()
    # Whatever the killed run started has a row: nothing is orphaned, only the lease is left.
    assert_nothing_orphaned(live_endpoint.target)
    assert ReconcileLease.objects.filter(endpoint=live_endpoint).exists()
    live_endpoint.refresh_from_db()
    assert live_endpoint.desired_release.number == release

    fresh = start_worker("fresh")
    # The killed worker's message waits out the broker's visibility timeout; beat does not.
    assert tasks.reconcile_all() == 1
    wait_live(live_endpoint, release, workers=[first, fresh])
    assert_converged(live_endpoint, release=release, version="adder:2")


def test_pool_process_killed_mid_deploy_the_task_is_redelivered_and_converges(
    live_endpoint, start_worker, deployer_api, tmp_path
):
    """acks_late + reject_on_worker_lost: the message goes back to the queue at once."""
    pause = Pause(tmp_path, "servers-ready")
    worker = start_worker("pool", pause.environment)
    release = deploy(deployer_api, live_endpoint, "adder:2")
    pause.wait_paused(worker)
    [pool_process] = worker.pool_pids()
    # Frozen first, so that removing the pause file cannot let the doomed run go on.
    os.kill(pool_process, signal.SIGSTOP)
    pause.release()
    os.kill(pool_process, signal.SIGKILL)
    # No beat here: the same message, redelivered to a new pool process, reaches the step again.
    pause.wait_paused(worker)
    assert pool_process not in worker.pool_pids()
    pause.release()
    wait_live(live_endpoint, release, workers=[worker])
    assert_converged(live_endpoint, release=release, version="adder:2")
    assert "WorkerLostError" in worker.log()


def test_sigterm_mid_deploy_finishes_the_deploy_and_loses_no_queued_task(
    live_endpoint, start_worker, deployer_api, versions, dev_target, system, broker, tmp_path
):
    """A warm shutdown lets the running reconcile finish; what waited in the queue is taken by
    the next worker."""
    pause = Pause(tmp_path, "servers-ready")
    worker = start_worker("term", pause.environment)
    release = deploy(deployer_api, live_endpoint, "adder:2")
    pause.wait_paused(worker)
    # Accepted while the only pool process is busy: its reconcile waits in the queue.
    queued = services.endpoint_create(
        actor=system, name="queued", target=dev_target, version="adder:3"
    )
    os.kill(worker.pid, signal.SIGTERM)
    wait_for(lambda: "Warm shutdown" in worker.log(), seconds=30, what="the warm shutdown")
    assert worker.alive()  # held open by the running task
    pause.release()
    assert worker.process.wait(timeout=90) == 0, worker.log()[-4000:]
    live_endpoint.refresh_from_db()
    assert live_endpoint.status == EndpointStatus.LIVE, live_endpoint.status_reason
    assert live_endpoint.live_release.number == release
    assert Endpoint.objects.get(pk=queued.pk).status == EndpointStatus.PENDING

    fresh = start_worker("after-term")
    wait_live(queued, 1, workers=[worker, fresh])
    assert_converged(queued, release=1, version="adder:3")
    assert_converged(live_endpoint, release=release, version="adder:2")


def test_database_connections_dropped_mid_reconcile_lose_nothing_acknowledged(
    live_endpoint, start_worker, deployer_api, tmp_path
):
    """What a database restart does to a worker: every connection it holds is terminated."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: pg_terminate_backend stands in for the restart")
    pause = Pause(tmp_path, "servers-ready")
    worker = start_worker("db", pause.environment)
    release = deploy(deployer_api, live_endpoint, "adder:2")
    pause.wait_paused(worker)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert cursor.fetchone()[0] >= 1
    pause.release()
    wait_for(
        lambda: "terminat" in worker.log(), seconds=30, what="the run to meet its dead connection"
    )
    # What the API acknowledged is still wanted.
    live_endpoint.refresh_from_db()
    assert live_endpoint.desired_release.number == release
    # The failed run gave its lease back; beat's next pass runs on a fresh connection of the
    # same worker (which still holds at the step once more) and converges.
    assert tasks.reconcile_all() == 1
    pause.wait_paused(worker, seconds=30)
    pause.release()
    wait_live(live_endpoint, release, workers=[worker])
    assert_converged(live_endpoint, release=release, version="adder:2")
