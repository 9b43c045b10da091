"""Reconciler faults: a worker SIGKILLed at every step, duplicate and stale runs, dead processes,
orphans. Real processes throughout; the killed run is a separate Python process."""

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.db import connection

from deployments import reconciler, services, tasks
from deployments.models import (
    DeploymentEvent,
    Endpoint,
    EndpointStatus,
    LocalProcess,
    ReconcileLease,
)
from deployments.targets import driver_for
from deployments.targets.base import Route, StaleGeneration
from deployments.targets.gateway import gateway_read_routes
from tests.deployments.conftest import running_markers

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.fault, pytest.mark.slow]


def infer_version(endpoint: Endpoint) -> str:
    response = httpx.post(
        f"{endpoint.url}/v2/models/{endpoint.name}/infer",
        json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [0.0]}]},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.headers["X-Model-Version"]


def assert_converged(endpoint: Endpoint, *, release: int, version: str) -> None:
    """Live on `release`, answering with `version`, and every process of ours has an owner."""
    endpoint.refresh_from_db()
    assert endpoint.status == EndpointStatus.LIVE, endpoint.status_reason
    assert endpoint.live_release.number == release
    assert endpoint.desired_release.number == release
    assert endpoint.live_release.live_at is not None
    assert {infer_version(endpoint) for _ in range(10)} == {version}
    table = gateway_read_routes(admin_url=endpoint.url, token=endpoint.gateway_token)
    assert table["generation"] == endpoint.generation
    assert [route["version"] for route in table["routes"]] == [version]
    version_id = endpoint.desired_release.variants[0]["version_id"]
    keys = set(LocalProcess.objects.filter(endpoint_id=endpoint.pk).values_list("key", flat=True))
    assert keys == {"gateway", f"v{version_id}"}
    markers = set(LocalProcess.objects.values_list("marker", flat=True))
    assert set(running_markers()) == markers
    assert not ReconcileLease.objects.exists()


class Child:
    """`reconcile_endpoint` in another process, paused at a named step."""

    def __init__(self, endpoint_id: int, step: str):
        self.pause_file = Path(settings.VAR_DIR) / f"pause-{endpoint_id}-{step}"
        self.pause_file.unlink(missing_ok=True)
        environment = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "MODELDECK_TEST_DATABASE_NAME": str(connection.settings_dict["NAME"]),
            reconciler.PAUSE_ENVIRONMENT: step,
            reconciler.PAUSE_FILE_ENVIRONMENT: str(self.pause_file),
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.deployments.reconcile_child", str(endpoint_id)],
            cwd=settings.BASE_DIR, env=environment, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def wait_paused(self) -> None:
        deadline = time.monotonic() + 90
        while not self.pause_file.exists():
            if self.process.poll() is not None:
                pytest.fail(f"the reconcile child exited early: {self.process.communicate()}")
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail("the reconcile child never reached its pause step")
            time.sleep(0.05)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.communicate(timeout=30)

    def resume(self) -> str:
        self.pause_file.unlink()
        output, errors = self.process.communicate(timeout=120)
        assert self.process.returncode == 0, errors
        return output.strip().splitlines()[-1]


@pytest.fixture
def live_endpoint(versions, dev_target, system, runtime_processes):
    endpoint = services.endpoint_create(
        actor=system, name="faulty", target=dev_target, version="adder:1"
    )
    assert tasks.reconcile_endpoint(endpoint.pk) == "converged"
    endpoint.refresh_from_db()
    return endpoint


@pytest.mark.parametrize("step", reconciler.STEPS)
def test_worker_killed_at_each_step_then_a_fresh_run_converges_without_orphans(
    step, live_endpoint, system
):
    services.endpoint_deploy(actor=system, endpoint=live_endpoint, version="adder:2")
    child = Child(live_endpoint.pk, step)
    child.wait_paused()
    child.kill()
    # The killed run's lease names a dead process on this host: the next run takes it over.
    assert ReconcileLease.objects.filter(endpoint=live_endpoint).exists()
    outcome = tasks.reconcile_endpoint(live_endpoint.pk)
    assert outcome == ("unchanged" if step == "converged" else "converged")
    assert_converged(live_endpoint, release=2, version="adder:2")


def test_worker_killed_while_stopping_then_the_stop_completes(live_endpoint, system):
    services.endpoint_stop(actor=system, endpoint=live_endpoint)
    child = Child(live_endpoint.pk, "drained")
    child.wait_paused()
    child.kill()
    assert tasks.reconcile_endpoint(live_endpoint.pk) == "stopped"
    live_endpoint.refresh_from_db()
    assert live_endpoint.status == EndpointStatus.STOPPED
    assert running_markers() == {}
    assert not LocalProcess.objects.exists()


def test_a_run_overtaken_by_a_newer_release_stops_before_switching_routes(live_endpoint, system):
    services.endpoint_deploy(actor=system, endpoint=live_endpoint, version="adder:2")
    child = Child(live_endpoint.pk, "gateway-ready")
    child.wait_paused()
    services.endpoint_deploy(actor=system, endpoint=live_endpoint, version="adder:3")
    events_before = DeploymentEvent.objects.count()
    assert child.resume() == "stale"
    live_endpoint.refresh_from_db()
    # Nothing changed: the gateway still routes release 1, the endpoint waits for release 3.
    table = gateway_read_routes(admin_url=live_endpoint.url, token=live_endpoint.gateway_token)
    assert table["generation"] == 1
    assert infer_version(live_endpoint) == "adder:1"
    assert live_endpoint.status == EndpointStatus.PENDING
    assert live_endpoint.live_release.number == 1
    assert DeploymentEvent.objects.count() == events_before
    assert tasks.reconcile_endpoint(live_endpoint.pk) == "converged"
    assert_converged(live_endpoint, release=3, version="adder:3")


def test_a_stale_run_object_changes_nothing(live_endpoint, system):
    """A run holding an old generation writes no status and switches no routes."""
    old_release, old_generation = live_endpoint.desired_release, live_endpoint.generation
    services.endpoint_deploy(actor=system, endpoint=live_endpoint, version="adder:2")
    holder = reconciler.new_holder()
    assert reconciler.lease_acquire(endpoint_id=live_endpoint.pk, holder=holder)
    live_endpoint.refresh_from_db()
    run = reconciler._Run(
        live_endpoint, old_release, old_generation, holder, driver_for(live_endpoint.target)
    )
    before = (DeploymentEvent.objects.count(), live_endpoint.status)
    with pytest.raises(reconciler.Stale):
        run.run()
    reconciler.lease_release(endpoint_id=live_endpoint.pk, holder=holder)
    live_endpoint.refresh_from_db()
    assert (DeploymentEvent.objects.count(), live_endpoint.status) == before
    assert infer_version(live_endpoint) == "adder:1"


def test_the_gateway_refuses_an_older_generation(live_endpoint):
    driver = driver_for(live_endpoint.target)
    gateway = driver.observe(endpoint=live_endpoint).gateway
    server = driver.observe(endpoint=live_endpoint).servers[0]
    route = Route(version="adder:1", version_id=server.version_id, upstream=server.upstream,
                  weight=100, role="primary")  # fmt: skip
    with pytest.raises(StaleGeneration):
        driver.set_routes(endpoint=live_endpoint, gateway=gateway, routes=[route], generation=0)
    # The same generation again is harmless.
    driver.set_routes(endpoint=live_endpoint, gateway=gateway, routes=[route], generation=1)
    assert infer_version(live_endpoint) == "adder:1"


def test_a_duplicate_run_changes_nothing(live_endpoint):
    pids = dict(LocalProcess.objects.values_list("key", "pid"))
    events = DeploymentEvent.objects.count()
    state = Endpoint.objects.values("status", "live_release", "url", "generation").get()
    assert tasks.reconcile_endpoint(live_endpoint.pk) == "unchanged"
    assert tasks.reconcile_endpoint(live_endpoint.pk) == "unchanged"
    assert dict(LocalProcess.objects.values_list("key", "pid")) == pids
    assert DeploymentEvent.objects.count() == events
    assert Endpoint.objects.values("status", "live_release", "url", "generation").get() == state


def test_a_run_while_another_holds_the_lease_does_nothing(live_endpoint, system):
    services.endpoint_deploy(actor=system, endpoint=live_endpoint, version="adder:2")
    holder = reconciler.new_holder()  # this (live) process holds it
    assert reconciler.lease_acquire(endpoint_id=live_endpoint.pk, holder=holder)
    assert tasks.reconcile_endpoint(live_endpoint.pk) == "busy"
    assert infer_version(live_endpoint) == "adder:1"
    reconciler.lease_release(endpoint_id=live_endpoint.pk, holder=holder)
    assert tasks.reconcile_endpoint(live_endpoint.pk) == "converged"
    assert_converged(live_endpoint, release=2, version="adder:2")


@pytest.mark.parametrize("key", ["server", "gateway"])
def test_a_killed_process_is_restarted_by_the_next_run(key, live_endpoint):
    rows = LocalProcess.objects.filter(endpoint_id=live_endpoint.pk)
    row = rows.get(key="gateway") if key == "gateway" else rows.exclude(key="gateway").get()
    # Only the run after the kill is judged. The run that created the endpoint may have logged a
    # restart of its own: right after Popen returns, a new process's /proc/<pid>/cmdline can still
    # be empty (exec has not finished), so the local driver sees no marker, the reconciler takes
    # the server for exited and "restarts" it (finding it running by then).
    restarts_before = row.restarts
    last_event = DeploymentEvent.objects.order_by("-pk").values_list("pk", flat=True).first()
    os.killpg(row.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while row.marker in running_markers():
        if time.monotonic() > deadline:
            pytest.fail(f"the killed {row.key} process still runs")
        time.sleep(0.05)
    assert tasks.reconcile_endpoint(live_endpoint.pk) == "converged"
    row.refresh_from_db()
    assert row.restarts == restarts_before + 1
    restarted = DeploymentEvent.objects.filter(pk__gt=last_event or 0)
    assert restarted.filter(message__startswith="Restarted").exists() == (key == "server")
    assert_converged(live_endpoint, release=1, version="adder:1")


def test_the_sweep_removes_processes_nobody_owns(live_endpoint, versions, dev_target, system):
    other = services.endpoint_create(
        actor=system, name="doomed", target=dev_target, version="adder:2"
    )
    assert tasks.reconcile_endpoint(other.pk) == "converged"
    doomed_markers = set(
        LocalProcess.objects.filter(endpoint_id=other.pk).values_list("marker", flat=True)
    )
    # One process loses its row; a whole endpoint disappears with its processes still running.
    server_row = (
        LocalProcess.objects.filter(endpoint_id=live_endpoint.pk).exclude(key="gateway").get()
    )
    lost_marker = server_row.marker
    LocalProcess.objects.filter(pk=server_row.pk).delete()
    Endpoint.objects.filter(pk=other.pk).delete()
    assert doomed_markers | {lost_marker} <= set(running_markers())
    assert reconciler.sweep_target(target=dev_target) == 3
    remaining = set(running_markers())
    assert not (doomed_markers | {lost_marker}) & remaining
    assert remaining == set(LocalProcess.objects.values_list("marker", flat=True))
    # The endpoint whose server was swept converges again.
    assert tasks.reconcile_endpoint(live_endpoint.pk) == "converged"
    assert_converged(live_endpoint, release=1, version="adder:1")


def test_a_server_between_fork_and_exec_is_not_taken_for_dead(
    versions, dev_target, system, runtime_processes, monkeypatch
):
    """Right after Popen returns, a child's /proc command line can still read empty (exec has
    not finished; longer under load). The driver's own unreaped child is alive all the same: the
    first run starts each process once and logs no restart."""
    from deployments.targets.local import driver as local_driver

    reads = collections.Counter()
    real = local_driver.process_command_line

    def before_exec(pid: int):
        reads[pid] += 1
        return None if reads[pid] <= 2 else real(pid)

    monkeypatch.setattr(local_driver, "process_command_line", before_exec)
    endpoint = services.endpoint_create(
        actor=system, name="fresh", target=dev_target, version="adder:1"
    )
    assert tasks.reconcile_endpoint(endpoint.pk) == "converged"
    rows = LocalProcess.objects.filter(endpoint_id=endpoint.pk)
    assert sorted(rows.values_list("restarts", flat=True)) == [0, 0]
    events = DeploymentEvent.objects.filter(endpoint=endpoint)
    assert not events.filter(message__startswith="Restarted").exists()
    endpoint.refresh_from_db()
    assert infer_version(endpoint) == "adder:1"
