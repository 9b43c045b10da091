"""Replicas on the local target under load: real processes, gateway and requests."""

import pytest

from deployments import services, tasks
from deployments.models import DeploymentEvent, Endpoint, EndpointStatus, LocalProcess
from tests.deployments.load import (
    assert_rollback_inside_the_warm_window_is_a_route_switch,
    assert_scaling_up_and_down_loses_no_request,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def converge(endpoint: Endpoint) -> Endpoint:
    assert tasks.reconcile_endpoint(endpoint.pk) == "converged"
    endpoint.refresh_from_db()
    return endpoint


def test_one_to_three_to_one_replicas_under_load_loses_no_request(
    versions, dev_target, deployer, make_actor, runtime_processes
):
    actor = make_actor(deployer)
    endpoint = converge(
        services.endpoint_create(actor=actor, name="scaled", target=dev_target, version="adder:1")
    )
    served = assert_scaling_up_and_down_loses_no_request(actor, endpoint, converge)
    assert len(served) == 3
    v1 = versions[1].pk
    # One process is left, and the page's numbers say so.
    assert set(LocalProcess.objects.values_list("key", flat=True)) == {"gateway", f"v{v1}"}
    endpoint.refresh_from_db()
    assert endpoint.replica_status[str(v1)]["ready"] == 1
    assert endpoint.replica_status[str(v1)]["desired"] == 1


def test_a_rollback_inside_the_warm_window_switches_routes_without_starting_servers(
    versions, dev_target, deployer, make_actor, runtime_processes, settings
):
    settings.DEPLOYMENTS_WARM_SECONDS = 300
    actor = make_actor(deployer)
    endpoint = converge(
        services.endpoint_create(actor=actor, name="warm", target=dev_target, version="adder:1")
    )
    assert_rollback_inside_the_warm_window_is_a_route_switch(actor, endpoint, converge)


def test_servers_past_the_warm_window_are_stopped_by_the_next_run(
    versions, dev_target, deployer, make_actor, runtime_processes, settings
):
    settings.DEPLOYMENTS_WARM_SECONDS = 300
    actor = make_actor(deployer)
    endpoint = converge(
        services.endpoint_create(actor=actor, name="cools", target=dev_target, version="adder:1")
    )
    services.endpoint_deploy(actor=actor, endpoint=endpoint, version="adder:2")
    converge(endpoint)
    v1, v2 = versions[1].pk, versions[2].pk
    keys = set(LocalProcess.objects.values_list("key", flat=True))
    assert keys == {"gateway", f"v{v1}", f"v{v2}"}
    endpoint.refresh_from_db()
    assert "warm_until" in endpoint.replica_status[str(v1)]
    assert tasks.reconcile_endpoint(endpoint.pk) == "unchanged"  # still inside the window
    settings.DEPLOYMENTS_WARM_SECONDS = 0
    last_event = DeploymentEvent.objects.latest("id").pk
    assert tasks.reconcile_endpoint(endpoint.pk) == "converged"
    # Only the cold server goes; the endpoint stays live and nothing else is re-announced.
    assert list(
        DeploymentEvent.objects.filter(pk__gt=last_event).values_list("message", flat=True)
    ) == ["Stopped the server of adder:1."]
    assert set(LocalProcess.objects.values_list("key", flat=True)) == {"gateway", f"v{v2}"}
    endpoint.refresh_from_db()
    assert endpoint.status == EndpointStatus.LIVE
    assert set(endpoint.replica_status) == {str(v2)}
