"""End to end on the local target: real version servers and gateways, real requests."""

from collections import Counter

import httpx
import pytest

from deployments import services, tasks
from deployments.models import Endpoint, EndpointStatus, LocalProcess, Release
from tests.deployments.conftest import running_markers
from tests.deployments.load import assert_shifts_and_rollback_lose_no_request

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


_client = httpx.Client(timeout=10)


def infer(endpoint: Endpoint, x: float = 10.0, **headers) -> tuple[str, float]:
    """One v2 request through the gateway: (X-Model-Version, y)."""
    response = _client.post(
        f"{endpoint.url}/v2/models/{endpoint.name}/infer",
        json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [x]}]},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    return response.headers["X-Model-Version"], response.json()["outputs"][0]["data"][0]


def converge(endpoint: Endpoint) -> Endpoint:
    assert tasks.reconcile_endpoint(endpoint.pk) in {"converged", "stopped"}
    endpoint.refresh_from_db()
    return endpoint


def owned_processes(endpoint: Endpoint) -> set[str]:
    """Keys of the endpoint's processes; every running process of ours must have a row."""
    rows = LocalProcess.objects.filter(endpoint_id=endpoint.pk)
    assert set(running_markers()) == set(LocalProcess.objects.values_list("marker", flat=True))
    return set(rows.values_list("key", flat=True))


def test_create_canary_promote_rollback_and_stop_through_the_gateway(
    versions, dev_target, scientist, make_actor, runtime_processes
):
    actor = make_actor(scientist)
    v1, v2 = versions[1], versions[2]
    endpoint = services.endpoint_create(
        actor=actor, name="journey", target=dev_target, version="adder:1"
    )
    endpoint = converge(endpoint)
    assert endpoint.status == EndpointStatus.LIVE
    assert endpoint.url.startswith("http://127.0.0.1:")
    assert endpoint.live_release.number == 1
    assert infer(endpoint) == ("adder:1", 11.0)
    url = endpoint.url

    services.endpoint_deploy(actor=actor, endpoint=endpoint, version="adder:2", weight=10)
    endpoint = converge(endpoint)
    answers = Counter(infer(endpoint)[0] for _ in range(200))
    assert set(answers) == {"adder:1", "adder:2"}
    assert answers["adder:1"] > answers["adder:2"]
    assert infer(endpoint, **{"X-Model-Version": "adder:2"}) == ("adder:2", 12.0)
    assert owned_processes(endpoint) == {"gateway", f"v{v1.pk}", f"v{v2.pk}"}

    services.endpoint_promote(actor=actor, endpoint=endpoint)
    endpoint = converge(endpoint)
    assert {infer(endpoint) for _ in range(20)} == {("adder:2", 12.0)}
    assert owned_processes(endpoint) == {"gateway", f"v{v2.pk}"}

    rollback = services.endpoint_rollback(actor=actor, endpoint=endpoint, release_number=1)
    endpoint = converge(endpoint)
    assert endpoint.live_release_id == rollback.pk
    assert {infer(endpoint) for _ in range(20)} == {("adder:1", 11.0)}
    assert endpoint.url == url  # the gateway keeps its address across releases
    assert owned_processes(endpoint) == {"gateway", f"v{v1.pk}"}
    live = Release.objects.filter(live_at__isnull=False).order_by("number")
    assert list(live.values_list("number", flat=True)) == [1, 2, 3, 4]

    services.endpoint_stop(actor=actor, endpoint=endpoint)
    endpoint = converge(endpoint)
    assert endpoint.status == EndpointStatus.STOPPED
    assert endpoint.url == ""
    assert owned_processes(endpoint) == set()
    assert running_markers() == {}


def test_weight_shifts_and_rollback_under_load_lose_no_request(
    versions, dev_target, scientist, make_actor, runtime_processes
):
    actor = make_actor(scientist)
    endpoint = converge(
        services.endpoint_create(actor=actor, name="steady", target=dev_target, version="adder:1")
    )
    assert_shifts_and_rollback_lose_no_request(actor, endpoint, converge)


def test_a_version_that_cannot_load_degrades_the_endpoint_and_the_old_one_keeps_serving(
    versions, adder_model, dev_target, scientist, make_actor, runtime_processes
):
    from django.core.files.base import ContentFile

    from registry.storage import artifact_storage

    broken = versions[3]
    artifact = broken.model_artifact
    artifact_storage().delete(artifact.storage_key)
    artifact_storage().save(artifact.storage_key, ContentFile(b"this is not an onnx file"))
    actor = make_actor(scientist)
    endpoint = converge(
        services.endpoint_create(actor=actor, name="sturdy", target=dev_target, version="adder:1")
    )
    services.endpoint_deploy(actor=actor, endpoint=endpoint, version="adder:3")
    assert tasks.reconcile_endpoint(endpoint.pk) == "failed"
    endpoint.refresh_from_db()
    assert endpoint.status == EndpointStatus.DEGRADED
    assert endpoint.status_reason.startswith(
        "Release 2 failed (release 1 still serves): The server of adder:3 exited while starting."
    )
    assert "INVALID_PROTOBUF" in endpoint.status_reason
    assert endpoint.live_release.number == 1
    assert {infer(endpoint) for _ in range(10)} == {("adder:1", 11.0)}
    # Rolling back to what serves converges again and removes the broken server.
    services.endpoint_rollback(actor=actor, endpoint=endpoint)
    endpoint = converge(endpoint)
    assert endpoint.status == EndpointStatus.LIVE
    assert owned_processes(endpoint) == {"gateway", f"v{versions[1].pk}"}


def test_a_foreign_server_on_the_port_is_never_taken_for_ours(tmp_path, dev_target):
    """Readiness asks for this endpoint's version by name, so another endpoint's (or another
    installation's) server that holds the port is not mistaken for the one we started."""
    import os

    from deployments.targets import driver_for
    from tests.monitoring.runtime_processes import start_server, write_model

    server = start_server(write_model(tmp_path / "other"), "other-model:3", endpoint="other")
    try:
        driver = driver_for(dev_target)
        row = LocalProcess(port=server.port, version="adder:1", endpoint_id=1, pk=1)
        assert not driver._server_state(row, os.getpid(), "mine").ready
        row.version = "other-model:3"
        assert driver._server_state(row, os.getpid(), "other").ready
    finally:
        server.stop()
