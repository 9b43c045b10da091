"""One status per meaning, one error body everywhere, and the per-worker port blocks of the test
suite itself."""

import pytest

from deployments.models import Endpoint
from tests.conftest import worker_port_block
from tests.factories import EndpointFactory, ModelVersionFactory, RegisteredModelFactory

pytestmark = pytest.mark.django_db


def test_a_duplicate_endpoint_name_is_a_409_conflict_and_changes_nothing(team, deployer_api):
    version = ModelVersionFactory(model=RegisteredModelFactory(name="adder", team=team), number=1)
    taken = EndpointFactory(team=team, name="taken")
    response = deployer_api.post(
        "/api/v1/endpoints/",
        {"name": "taken", "target": taken.target.name, "version": version.reference},
        format="json",
    )
    assert response.status_code == 409
    assert response.json() == {
        "error": "An endpoint named 'taken' already exists.",
        "detail": {"name": "taken"},
    }
    assert list(Endpoint.objects.values_list("name", "desired_release")) == [("taken", None)]


def test_an_unknown_api_path_answers_the_json_error_body(scientist_api):
    response = scientist_api.get("/api/v1/no-such-thing/")
    assert (response.status_code, response["Content-Type"]) == (404, "application/json")
    assert response.json() == {"error": "No such API path.", "detail": {}}


def test_worker_port_blocks_are_disjoint_and_inside_the_range():
    blocks = [worker_port_block("28000-28999", f"gw{n}", 4) for n in range(4)]
    assert blocks == [(28000, 28249), (28250, 28499), (28500, 28749), (28750, 28999)]
    with pytest.raises(pytest.UsageError):
        worker_port_block("28000-28009", "gw0", 4)


def test_a_stack_s_own_port_block_stays_outside_the_run_s_range(monkeypatch):
    """Stacks and fault tests pick a block of their own; it never overlaps the range the xdist
    workers split between them, whichever worker picks it."""
    from tests.e2e.stack import serving_port_block

    monkeypatch.setenv("MODELDECK_TEST_PORT_RANGE", "20000-29999")
    for _ in range(200):
        low, high = (int(part) for part in serving_port_block().split("-"))
        assert low >= 30000 and high <= 31999 and high - low == 99
    monkeypatch.setenv("MODELDECK_TEST_PORT_RANGE", "20000-31999")
    with pytest.raises(RuntimeError, match="no block of 100 ports"):
        serving_port_block()
