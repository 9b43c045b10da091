"""Scaling a version on a Kubernetes target along the user's path: the endpoint is created and
scaled through the REST API, the real reconciler applies each release to the protocol-level fake
API server (k8s_fake_api.py), and the cluster's objects, the rollout wait, `GET …/scale/` and the
GitOps export are read back. The serving image goes through the real build path with the driver
tests' recording engine (no Docker engine here)."""

from __future__ import annotations

import pytest
import yaml

from deployments.models import Endpoint, EndpointStatus, Release
from deployments.reconciler import reconcile_endpoint
from deployments.targets.kubernetes.validation import validate_manifest
from tests.deployments.test_kubernetes_driver import (
    NAMESPACE,
    _fast_reconciles,
    cluster,
    engine,
    kubeconfig,
    target,
)

pytestmark = pytest.mark.django_db

__all__ = ["_fast_reconciles", "cluster", "engine", "kubeconfig", "target"]  # shared fixtures

SCALE = "/api/v1/endpoints/fraud/scale/"
AUTOSCALE = {"min": 2, "max": 6, "target_cpu_percent": 70}


@pytest.fixture
def endpoint(versions, target, engine, deployer_api):
    created = deployer_api.post(
        "/api/v1/endpoints/",
        {"name": "fraud", "target": target.name, "version": "adder:1"},
        format="json",
    )
    assert created.status_code in (201, 202), created.content
    return Endpoint.objects.get(name="fraud")


def _reconcile(endpoint) -> str:
    return reconcile_endpoint(endpoint_id=endpoint.pk)


def _server(cluster, versions) -> str:
    return f"md-fraud-v{versions[1].pk}"


def _scaling(cluster, name) -> tuple[dict | None, dict | None]:
    return (
        cluster.get("HorizontalPodAutoscaler", name, NAMESPACE),
        cluster.get("PodDisruptionBudget", name, NAMESPACE),
    )


def _replicas(api) -> list[tuple]:
    body = api.get(SCALE).json()
    return [(r["version"], r["ready"], r["desired"], r["autoscale"]) for r in body["results"]]


def test_replicas_then_autoscale_then_one_replica_through_the_api(
    cluster, endpoint, versions, deployer_api, scientist_api, settings
):
    assert _reconcile(endpoint) == "converged"
    name = _server(cluster, versions)
    assert cluster.get("Deployment", name, NAMESPACE)["spec"]["replicas"] == 1
    assert _replicas(deployer_api) == [("adder:1", 1, 1, None)]

    # A scientist may not scale; nothing is written.
    releases = Release.objects.count()
    refused = scientist_api.post(SCALE, {"version": "adder:1", "replicas": 3}, format="json")
    assert refused.status_code == 403
    assert Release.objects.count() == releases

    # 1 -> 3 replicas. The cluster's controller is slow: the rollout is not done while fewer
    # than three pods are ready, and the endpoint stays on the release that serves.
    answer = deployer_api.post(SCALE, {"version": "adder:1", "replicas": 3}, format="json")
    assert answer.status_code == 202, answer.content
    assert answer.json() == {"release": 2, "version": "adder:1", "replicas": 3, "autoscale": None}
    cluster.auto_rollout = False
    settings.DEPLOYMENTS_READY_TIMEOUT_SECONDS = 0.3
    assert _reconcile(endpoint) == "failed"
    deployment = cluster.get("Deployment", name, NAMESPACE)
    assert deployment["spec"]["replicas"] == 3
    hpa, pdb = _scaling(cluster, name)
    assert hpa is None
    assert pdb["spec"]["maxUnavailable"] == 1  # three fixed pods: evict one at a time
    # The controller has seen the new count; two of the three pods are ready.
    generation = deployment["metadata"]["generation"]
    cluster.set_deployment_status(
        name, NAMESPACE, observedGeneration=generation,
        replicas=3, updatedReplicas=3, readyReplicas=2, availableReplicas=2,
    )  # fmt: skip
    assert _reconcile(endpoint) == "failed"
    endpoint.refresh_from_db()
    assert endpoint.status == EndpointStatus.DEGRADED
    assert endpoint.live_release.number == 1
    assert "adder:1 did not become ready within 0.3 seconds" in endpoint.status_reason
    assert _replicas(deployer_api) == [("adder:1", 2, 3, None)]

    # All three ready; the gateway's own rollout (its route table) finishes at once again.
    cluster.finish_rollout(name, NAMESPACE)
    cluster.auto_rollout = True
    settings.DEPLOYMENTS_READY_TIMEOUT_SECONDS = 5
    assert _reconcile(endpoint) == "converged", Endpoint.objects.get(pk=endpoint.pk).status_reason
    endpoint.refresh_from_db()
    assert (endpoint.status, endpoint.live_release.number) == (EndpointStatus.LIVE, 2)
    assert _replicas(deployer_api) == [("adder:1", 3, 3, None)]

    # 3 replicas -> autoscale: an HPA and a PDB; the Deployment no longer sets a count.
    cluster.take_requests()
    answer = deployer_api.post(SCALE, {"version": "adder:1", "autoscale": AUTOSCALE}, format="json")
    assert answer.status_code == 202, answer.content
    assert answer.json()["autoscale"] == AUTOSCALE
    autoscaled = answer.json()["release"]
    assert _reconcile(endpoint) == "converged"
    applied = cluster.applied(cluster.take_requests())
    assert "replicas" not in applied[("Deployment", name)]["spec"]
    hpa, pdb = _scaling(cluster, name)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": name,
    }  # fmt: skip
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"] == cluster.get("Deployment", name, NAMESPACE)["spec"]["selector"]
    ((version, ready, desired, bounds),) = _replicas(deployer_api)
    assert (version, bounds) == ("adder:1", AUTOSCALE)
    assert ready >= desired >= 2

    # Back to one fixed replica: the autoscaler and the budget go.
    answer = deployer_api.post(SCALE, {"version": "adder:1", "replicas": 1}, format="json")
    assert answer.status_code == 202, answer.content
    assert _reconcile(endpoint) == "converged"
    assert _scaling(cluster, name) == (None, None)
    assert cluster.get("Deployment", name, NAMESPACE)["spec"]["replicas"] == 1
    assert _replicas(deployer_api) == [("adder:1", 1, 1, None)]

    # The GitOps export of the autoscaled release holds the HPA and PDB, all valid objects.
    export = deployer_api.get(f"/api/v1/endpoints/fraud/releases/{autoscaled}/manifests/")
    assert export.status_code == 200, export.content
    documents = [d for d in yaml.safe_load_all(export.content.decode()) if d]
    for document in documents:
        validate_manifest(document)
    by_kind = {(d["kind"], d["metadata"]["name"]): d for d in documents}
    exported_hpa = by_kind[("HorizontalPodAutoscaler", name)]
    assert exported_hpa["spec"]["minReplicas"] == 2
    assert exported_hpa["spec"]["maxReplicas"] == 6
    assert ("PodDisruptionBudget", name) in by_kind
    assert "replicas" not in by_kind[("Deployment", name)]["spec"]


def test_a_local_endpoint_refuses_autoscale_with_a_readable_400(versions, dev_target, deployer_api):
    created = deployer_api.post(
        "/api/v1/endpoints/",
        {"name": "on-local", "target": dev_target.name, "version": "adder:1"},
        format="json",
    )
    assert created.status_code in (201, 202), created.content
    releases = Release.objects.count()
    refused = deployer_api.post(
        "/api/v1/endpoints/on-local/scale/",
        {"version": "adder:1", "autoscale": AUTOSCALE},
        format="json",
    )
    assert refused.status_code == 400
    assert refused.json()["error"] == (
        "Local targets cannot autoscale (nothing there measures CPU and adds replicas); set a "
        "fixed number of replicas instead."
    )
    assert Release.objects.count() == releases
