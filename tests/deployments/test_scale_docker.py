"""Replicas on the Docker target under load: N containers per version behind the gateway
container, real images and requests (the CI Docker tier, `.ci/docker-tier.sh`)."""

import pytest

from deployments import services
from deployments.models import Target, TargetKind
from deployments.reconciler import reconcile_endpoint
from deployments.targets.base import LABEL_INSTALLATION, LABEL_ROLE, installation_id
from tests.deployments import test_docker_engine as docker_tier
from tests.deployments.load import (
    assert_rollback_inside_the_warm_window_is_a_route_switch,
    assert_scaling_up_and_down_loses_no_request,
)

# The Docker tier's engine fixtures (skip without an engine, clean up this installation's
# containers before and after) and its converge step.
docker_engine = docker_tier.docker_engine
engine = docker_tier.engine
_converge = docker_tier._converge
# Docker endpoints require an inference key: each endpoint a test makes gets one, sent by the load.
_inference_keys = docker_tier._inference_keys

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def docker_target(team):
    return Target.objects.create(
        team=team, name="docker-scale", kind=TargetKind.DOCKER,
        config={"threads": 1, "gateway_port_range": "22800-22899", "mem_limit": "512m"},
    )  # fmt: skip


def _servers(client) -> list[str]:
    ours = {"label": [f"{LABEL_INSTALLATION}={installation_id()}", f"{LABEL_ROLE}=server"]}
    return sorted(container.name for container in client.containers.list(all=True, filters=ours))


def test_one_to_three_to_one_containers_under_load_loses_no_request(
    engine, versions, docker_target, system
):
    endpoint = _converge(
        services.endpoint_create(
            actor=system, name="scaled", target=docker_target, version="adder:1"
        )
    )
    served = assert_scaling_up_and_down_loses_no_request(
        system, endpoint, _converge, headers=docker_tier.key_header(endpoint.name)
    )
    assert len(served) == 3
    prefix = f"mdk-{installation_id()}-e{endpoint.pk}-v{versions[1].pk}"
    assert _servers(engine) == [prefix]
    services.endpoint_stop(actor=system, endpoint=endpoint)
    assert reconcile_endpoint(endpoint_id=endpoint.pk) == "stopped"
    assert _servers(engine) == []


def test_a_rollback_inside_the_warm_window_switches_routes_without_starting_containers(
    engine, versions, docker_target, system, settings
):
    settings.DEPLOYMENTS_WARM_SECONDS = 300
    endpoint = _converge(
        services.endpoint_create(actor=system, name="warm", target=docker_target, version="adder:1")
    )
    assert_rollback_inside_the_warm_window_is_a_route_switch(
        system, endpoint, _converge, headers=docker_tier.key_header(endpoint.name)
    )
    assert len(_servers(engine)) == 2
