"""End to end on the local target, real processes only: a canary that errors on a fifth of its
inputs is rolled back by its rollback policy within its bake window; a version that degrades
after promotion is rolled back by the always-on policy. The gateway's prediction log arrives at
the ingest API of a live dashboard on the way."""

from __future__ import annotations

import time

import httpx
import numpy as np
import onnx
import pytest
from django.utils import timezone
from onnx import TensorProto, helper

from deployments import services as deployment_services
from deployments import tasks as deployment_tasks
from deployments.targets.gateway import gateway_read_routes
from monitoring import services
from monitoring import tasks as monitoring_tasks
from monitoring.models import EvaluationAction, PolicyEvaluation, PredictionRecord
from registry.models import ModelVersion, RegisteredModel
from tests.deployments import conftest as deployment_fixtures
from tests.factories import ModelVersionFactory

adder_model = deployment_fixtures.adder_model
versions = deployment_fixtures.versions
dev_target = deployment_fixtures.dev_target
runtime_processes = deployment_fixtures.runtime_processes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

POLICY = {
    "criteria": [
        {"metric": "error_rate", "threshold": 0.05, "window_minutes": 5, "minimum_samples": 20}
    ],
    "scope": "always",
}


def onnx_lookup() -> bytes:
    """y = [10, 11, 12, 13][x]: right for x in 0-3, an onnxruntime error (a 500) for x = 4."""
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["x"], ["index"], to=TensorProto.INT64),
            helper.make_node("Gather", ["table", "index"], ["gathered"], axis=0),
            helper.make_node("Reshape", ["gathered", "shape"], ["y"]),
        ],
        "lookup",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        initializer=[
            helper.make_tensor("table", TensorProto.FLOAT, [4], [10.0, 11.0, 12.0, 13.0]),
            helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 1]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def flaky_version(registered: RegisteredModel, number: int) -> ModelVersion:
    return ModelVersionFactory(model=registered, number=number, artifact=onnx_lookup())


def send(endpoint, inputs) -> dict[str, list[int]]:
    """One request per input; the statuses each version answered with."""
    answered: dict[str, list[int]] = {}
    with httpx.Client(timeout=10) as client:
        for value in inputs:
            body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [value]}]}
            response = client.post(f"{endpoint.url}/v2/models/{endpoint.name}/infer", json=body)
            answered.setdefault(response.headers["X-Model-Version"], []).append(
                response.status_code
            )
    return answered


def routed_versions(endpoint) -> list[str]:
    from deployments.targets import driver_for

    gateway = driver_for(endpoint.target).observe(endpoint=endpoint).gateway
    table = gateway_read_routes(admin_url=gateway.admin_url, token=endpoint.gateway_token)
    return sorted(route["version"] for route in table["routes"])


def test_a_canary_failing_on_a_fifth_of_its_inputs_is_rolled_back_within_its_bake(
    versions, adder_model, dev_target, deployer, make_actor, runtime_processes, live_server,
    settings,
):  # fmt: skip
    settings.MODELDECK_INTERNAL_URL = live_server.url
    flaky_version(adder_model, 4)
    actor = make_actor(deployer)
    endpoint = deployment_services.endpoint_create(
        actor=actor, name="guarded", target=dev_target, version="adder:1"
    )
    outcome = deployment_tasks.reconcile_endpoint(endpoint.pk)
    endpoint.refresh_from_db()
    assert outcome == "converged", endpoint.status_reason
    services.rollback_policy_set(actor=actor, endpoint=endpoint, **POLICY)
    canary = deployment_services.endpoint_deploy(
        actor=actor,
        endpoint=endpoint,
        version="adder:4",
        strategy=[{"weight": 50, "bake_seconds": 600}, {"weight": 100, "bake_seconds": 0}],
    )
    assert deployment_tasks.reconcile_endpoint(endpoint.pk) == "converged"
    endpoint.refresh_from_db()
    canary.refresh_from_db()
    assert routed_versions(endpoint) == ["adder:1", "adder:4"]

    monitoring_tasks.scrape_all()
    inputs = np.tile(np.arange(5, dtype=float), 40)  # x = 4 on a fifth of the requests
    answered = send(endpoint, inputs)
    assert 500 in answered["adder:4"] and set(answered["adder:1"]) == {200}
    monitoring_tasks.scrape_all()

    # Beat's guardrail task: evaluates, rolls back, and converges inline (no worker runs here).
    monitoring_tasks.evaluate_rollback_policies()
    evaluation = PolicyEvaluation.objects.get(endpoint=endpoint)
    assert evaluation.action == EvaluationAction.ROLLED_BACK, evaluation.message
    assert evaluation.results[0]["value"] == pytest.approx(
        answered["adder:4"].count(500) / len(answered["adder:4"])
    )
    assert evaluation.created_at < canary.live_at + timezone.timedelta(seconds=600)
    endpoint.refresh_from_db()
    assert endpoint.desired_release.restores.number == 1
    assert f"Guardrail evaluation {evaluation.pk}" in endpoint.desired_release.note
    assert endpoint.status == "live"
    assert routed_versions(endpoint) == ["adder:1"]
    assert set(send(endpoint, [4.0] * 5)) == {"adder:1"}

    # The gateway shipped its prediction log to the live dashboard with its own token.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and PredictionRecord.objects.filter(
        endpoint=endpoint, version_label="adder:4"
    ).count() < len(answered["adder:4"]):
        time.sleep(0.2)
    logged = PredictionRecord.objects.filter(endpoint=endpoint, version_label="adder:4")
    assert sorted(logged.values_list("status", flat=True)) == sorted(answered["adder:4"])
    assert logged.filter(status=200).first().predicted_value in (10.0, 11.0, 12.0, 13.0)


def test_a_version_that_degrades_after_promotion_is_rolled_back_by_the_always_on_policy(
    versions, adder_model, dev_target, deployer, make_actor, runtime_processes
):
    flaky_version(adder_model, 4)
    actor = make_actor(deployer)
    endpoint = deployment_services.endpoint_create(
        actor=actor, name="promoted", target=dev_target, version="adder:1"
    )
    assert deployment_tasks.reconcile_endpoint(endpoint.pk) == "converged"
    deployment_services.endpoint_deploy(
        actor=actor, endpoint=endpoint, version="adder:4", weight=20
    )
    assert deployment_tasks.reconcile_endpoint(endpoint.pk) == "converged"
    deployment_services.endpoint_promote(actor=actor, endpoint=endpoint)
    assert deployment_tasks.reconcile_endpoint(endpoint.pk) == "converged"
    services.rollback_policy_set(actor=actor, endpoint=endpoint, **POLICY)
    endpoint.refresh_from_db()
    assert routed_versions(endpoint) == ["adder:4"]

    monitoring_tasks.scrape_all()
    healthy = send(endpoint, np.tile(np.arange(4, dtype=float), 10))  # inputs it handles
    assert set(healthy["adder:4"]) == {200}
    monitoring_tasks.scrape_all()
    monitoring_tasks.evaluate_rollback_policies()
    first = PolicyEvaluation.objects.filter(endpoint=endpoint).latest("id")
    assert (first.outcome, first.action) == ("passed", "none")

    degraded = send(endpoint, np.tile(np.arange(5, dtype=float), 20))  # the inputs move on
    assert degraded["adder:4"].count(500) == 20
    monitoring_tasks.scrape_all()
    monitoring_tasks.evaluate_rollback_policies()
    second = PolicyEvaluation.objects.filter(endpoint=endpoint).latest("id")
    assert second.action == EvaluationAction.ROLLED_BACK, second.message
    endpoint.refresh_from_db()
    # Back to the last live release without adder:4: release 1, adder:1 alone.
    assert endpoint.desired_release.restores.number == 1
    assert routed_versions(endpoint) == ["adder:1"]
    assert set(send(endpoint, [4.0] * 3)["adder:1"]) == {200}
