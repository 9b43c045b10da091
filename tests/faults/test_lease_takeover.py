"""A reconcile lease held by a killed process is taken over at once, even before the killed
process is reaped (a worker's pool process killed together with its main process stays a zombie
until init gets to it)."""

import signal
import socket
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from deployments import reconciler
from deployments.models import Endpoint, ReconcileLease
from tests.faults.processes import wait_for

pytestmark = [pytest.mark.django_db, pytest.mark.fault]


@pytest.fixture
def endpoint(versions, dev_target, system):
    from deployments import services

    return services.endpoint_create(
        actor=system, name="leased", target=dev_target, version="adder:1"
    )


def hold(endpoint: Endpoint, pid: int) -> str:
    holder = f"{socket.gethostname()}:{pid}:deadbeef"
    ReconcileLease.objects.create(
        endpoint=endpoint, holder=holder, expires_at=timezone.now() + timedelta(minutes=5)
    )
    return holder


def test_a_lease_of_a_killed_but_unreaped_process_is_taken_over(endpoint):
    process = subprocess.Popen(["sleep", "60"])
    process.send_signal(signal.SIGKILL)
    # Not waited for yet: a zombie, which signal 0 still reaches.
    stat = Path(f"/proc/{process.pid}/stat")
    wait_for(lambda: stat.read_text().rpartition(")")[2].split()[0] == "Z", seconds=10,
             what="the killed process to become a zombie", poll=0.01)  # fmt: skip
    hold(endpoint, process.pid)
    try:
        assert reconciler.lease_acquire(endpoint_id=endpoint.pk, holder="next:1:run")
    finally:
        process.wait()
    assert ReconcileLease.objects.get(endpoint=endpoint).holder == "next:1:run"


def test_a_lease_of_a_live_process_is_not_taken_over(endpoint):
    with subprocess.Popen(["sleep", "60"]) as process:
        holder = hold(endpoint, process.pid)
        try:
            assert not reconciler.lease_acquire(endpoint_id=endpoint.pk, holder="next:1:run")
        finally:
            process.kill()
    assert ReconcileLease.objects.get(endpoint=endpoint).holder == holder
