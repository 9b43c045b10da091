"""A real Celery worker SIGKILLed in the middle of a serving-image build on a real Docker engine.

The build's worker keeps a heartbeat on the Build row while it lives (even while the engine
prints nothing); once it is killed the heartbeat stops, and the next worker fails the lost build
and builds again within DEPLOYMENTS_BUILD_STALE_SECONDS instead of waiting on it.

Needs the CI Docker tier (`.ci/docker-tier.sh`): skipped without an engine, failed instead when
MODELDECK_REQUIRE_TIERS names "docker".
"""

from __future__ import annotations

import httpx
import pytest

from deployments import access, services, tasks
from deployments.models import Build, BuildStatus, Endpoint, EndpointStatus, Target, TargetKind
from deployments.targets import driver_for
from deployments.targets.base import ResourceRole
from tests.deployments.test_docker_engine import _remove_ours, docker_engine  # noqa: F401
from tests.faults.processes import Pause, serving_port_block, wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.docker,
    pytest.mark.fault,
    pytest.mark.slow,
]

STALE_SECONDS = 4


@pytest.fixture
def engine(docker_engine):  # noqa: F811
    _remove_ours(docker_engine)
    yield docker_engine
    _remove_ours(docker_engine)


@pytest.fixture
def docker_target(team, engine):
    return Target.objects.create(
        team=team, name="docker-faults", kind=TargetKind.DOCKER,
        config={"threads": 1, "gateway_port_range": serving_port_block(), "mem_limit": "512m"},
    )  # fmt: skip


# Docker endpoints require an inference key: endpoint name -> the key the test made for it.
KEYS: dict[str, str] = {}


def infer_version(endpoint: Endpoint) -> str:
    response = httpx.post(
        f"{endpoint.url}/v2/models/{endpoint.name}/infer",
        json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [0.0]}]},
        headers={"X-Api-Key": KEYS.get(endpoint.name, "")},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.headers["X-Model-Version"]


def test_worker_sigkilled_mid_build_does_not_wedge_the_endpoint(
    versions, docker_target, system, broker, start_worker, tmp_path
):
    pause = Pause(tmp_path, "image-building")
    stale = {"DEPLOYMENTS_BUILD_STALE_SECONDS": str(STALE_SECONDS)}
    first = start_worker("build", {**pause.environment, **stale})
    endpoint = services.endpoint_create(
        actor=system, name="built", target=docker_target, version="adder:1"
    )
    KEYS["built"] = access.endpoint_key_create(actor=system, endpoint=endpoint)[1]
    pause.wait_paused(first, seconds=180)
    lost = Build.objects.get(version=versions[1], target=docker_target)
    assert lost.status == BuildStatus.RUNNING
    # The engine prints nothing while the worker holds; the heartbeat still moves the row.
    wait_for(
        lambda: Build.objects.get(pk=lost.pk).updated_at > lost.updated_at,
        seconds=STALE_SECONDS,
        what="a heartbeat of the running build",
    )
    first.kill()

    fresh = start_worker("rebuild", stale)
    assert tasks.reconcile_all() == 1  # beat, as it runs every RECONCILE_INTERVAL_SECONDS

    def live():
        return Endpoint.objects.filter(pk=endpoint.pk, status=EndpointStatus.LIVE).exists()

    try:
        wait_for(live, seconds=180, what="the endpoint to go live on a fresh worker")
    except pytest.fail.Exception:
        endpoint.refresh_from_db()
        pytest.fail(f"{endpoint.status}: {endpoint.status_reason}\n{fresh.log()[-4000:]}")
    lost.refresh_from_db()
    assert lost.status == BuildStatus.FAILED
    assert lost.status_reason == "The build stopped making progress (its worker was lost)."
    rebuilt = Build.objects.exclude(pk=lost.pk).get(version=versions[1], target=docker_target)
    assert rebuilt.status == BuildStatus.SUCCEEDED, rebuilt.log[-3000:]
    endpoint.refresh_from_db()
    assert {infer_version(endpoint) for _ in range(5)} == {"adder:1"}
    owned = driver_for(docker_target).list_owned()
    assert [resource for resource in owned if resource.orphaned] == []
    assert sorted((str(resource.role), resource.endpoint_id) for resource in owned) == [
        (ResourceRole.GATEWAY.value, endpoint.pk),
        (ResourceRole.SERVER.value, endpoint.pk),
    ]
