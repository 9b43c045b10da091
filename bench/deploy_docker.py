"""Docker target benchmark: prints, asserts nothing.

    python bench/deploy_docker.py          (after .ci/docker-tier.sh)

Measures, on a throwaway database and a real Docker engine:
- seconds from the deploy call to the first successful inference of a new version on a warm
  build cache (the version's image is built during the deploy: only its model layer is new);
- seconds from the rollback call to the old version answering again (its image is reused);
- the serving image's size.
Each is printed with its ratio to the anchor below (a ratio under 1 beats the anchor).
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time
from pathlib import Path

# Anchors: what a person deploying by hand with `docker build` + `docker run` of a prepared
# image would call good on this 2-core machine.
ANCHOR_DEPLOY_SECONDS = 30.0
ANCHOR_ROLLBACK_SECONDS = 10.0
ANCHOR_IMAGE_MB = 500.0

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The test settings give a throwaway var/ folder (database, artifacts) and an in-memory broker.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")

import django  # noqa: E402

django.setup()

import hashlib  # noqa: E402

import httpx  # noqa: E402
from django.core.files.base import ContentFile  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from accounts.actor import Actor  # noqa: E402
from accounts.models import Team  # noqa: E402
from deployments import access, services  # noqa: E402
from deployments.models import Build, Endpoint, Target, TargetKind  # noqa: E402
from deployments.reconciler import reconcile_endpoint  # noqa: E402
from deployments.targets.base import LABEL_INSTALLATION, installation_id  # noqa: E402
from deployments.targets.docker.driver import docker_client, docker_settings  # noqa: E402
from registry.models import Approval, Artifact, ArtifactKind, ModelVersion, RegisteredModel  # noqa: E402
from registry.storage import artifact_storage, new_storage_key  # noqa: E402


def adder(offset: float) -> bytes:
    """y = x + offset: each version's answer names it."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "offset"], ["y"])],
        "adder",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        initializer=[helper.make_tensor("offset", TensorProto.FLOAT, [1], [offset])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def register(model: RegisteredModel, number: int, offset: float) -> ModelVersion:
    content = adder(offset)
    version = ModelVersion.objects.create(
        model=model, number=number, status="ready", approval=Approval.APPROVED,
        signature={"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}],
                   "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}]},
    )  # fmt: skip
    key = new_storage_key(model_id=model.pk, kind=ArtifactKind.MODEL)
    artifact_storage().save(key, ContentFile(content))
    Artifact.objects.create(
        version=version, kind=ArtifactKind.MODEL, storage_key=key, size=len(content),
        sha256=hashlib.sha256(content).hexdigest(), content_type="application/octet-stream",
    )  # fmt: skip
    RegisteredModel.objects.filter(pk=model.pk).update(last_version_number=number)
    return version


# Docker endpoints require an inference key; the run makes one right after creating it.
HEADERS: dict[str, str] = {}


def answer(url: str) -> float | None:
    try:
        response = httpx.post(
            f"{url}/v2/models/bench/infer", timeout=2, headers=HEADERS,
            json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [0.0]}]},
        )  # fmt: skip
    except httpx.HTTPError:
        return None
    return response.json()["outputs"][0]["data"][0] if response.status_code == 200 else None


def until_answer(endpoint: Endpoint, expected: float, started: float) -> float:
    """Reconcile (as the worker would, in a thread) while polling the endpoint: seconds until
    `expected` answers, which may be before the reconcile finishes draining the old server."""
    outcome: dict[str, str] = {}

    def work() -> None:
        try:
            outcome["result"] = reconcile_endpoint(endpoint_id=endpoint.pk)
        finally:
            connection.close()

    worker = threading.Thread(target=work)
    worker.start()
    url = endpoint.url
    while True:
        if not url:
            url = Endpoint.objects.get(pk=endpoint.pk).url
        if url and answer(url) == expected:
            seconds = time.monotonic() - started
            break
        if not worker.is_alive() and outcome.get("result") != "converged":
            endpoint.refresh_from_db()
            raise SystemExit(f"reconcile said {outcome.get('result')}: {endpoint.status_reason}")
        if time.monotonic() - started > 300:
            raise SystemExit("no answer within 300 s")
        time.sleep(0.02)
    worker.join()
    endpoint.refresh_from_db()
    return seconds


def main() -> None:
    call_command("migrate", verbosity=0)
    system = Actor.system("bench")
    team = Team.objects.create(name="bench")
    target = Target.objects.create(
        team=team, name="docker-bench", kind=TargetKind.DOCKER,
        config={"threads": 1, "gateway_port_range": "19600-19699"},
    )  # fmt: skip
    model = RegisteredModel.objects.create(team=team, name="bench-adder")
    # Fresh offsets: the new version's model layer cannot come from an earlier run's cache.
    old_offset, new_offset = float(random.randint(1, 10**6)), float(random.randint(1, 10**6) + 0.5)
    old = register(model, 1, old_offset)
    new = register(model, 2, new_offset)
    client = docker_client(docker_settings(target.config))
    try:
        endpoint = services.endpoint_create(
            actor=system, name="bench", target=target, version=old.reference
        )
        HEADERS["X-Api-Key"] = access.endpoint_key_create(actor=system, endpoint=endpoint)[1]
        first = until_answer(endpoint, old_offset, time.monotonic())
        print(f"first deploy (builds {old.reference}, starts server + gateway): {first:.1f} s")

        started = time.monotonic()
        services.endpoint_deploy(actor=system, endpoint=endpoint, version=new.reference)
        deploy = until_answer(endpoint, new_offset, started)
        build = Build.objects.get(version=new, target=target)
        build_seconds = (build.finished_at - build.started_at).total_seconds()
        print(f"deploy → first inference of a new version (warm cache): {deploy:.1f} s "
              f"(image build {build_seconds:.1f} s); ratio to {ANCHOR_DEPLOY_SECONDS:g} s anchor: "
              f"{deploy / ANCHOR_DEPLOY_SECONDS:.2f}")  # fmt: skip

        started = time.monotonic()
        services.endpoint_rollback(actor=system, endpoint=endpoint, release_number=1)
        rollback = until_answer(endpoint, old_offset, started)
        print(
            f"rollback → old version answers: {rollback:.1f} s; ratio to "
            f"{ANCHOR_ROLLBACK_SECONDS:g} s anchor: {rollback / ANCHOR_ROLLBACK_SECONDS:.2f}"
        )

        size_mb = client.images.get(build.digest).attrs["Size"] / 1e6
        print(
            f"serving image size: {size_mb:.0f} MB; ratio to {ANCHOR_IMAGE_MB:g} MB anchor: "
            f"{size_mb / ANCHOR_IMAGE_MB:.2f}"
        )
        services.endpoint_stop(actor=system, endpoint=endpoint)
        reconcile_endpoint(endpoint_id=endpoint.pk)
    finally:
        ours = {"label": [f"{LABEL_INSTALLATION}={installation_id()}"]}
        for container in client.containers.list(all=True, filters=ours):
            container.remove(force=True)
        for network in client.networks.list(filters=ours):
            network.remove()
        for volume in client.volumes.list():
            if volume.name.startswith(f"mdk-{installation_id()}-"):
                volume.remove(force=True)
        for image in client.images.list(name="modeldeck/serving"):
            for tag in image.tags:
                if tag.endswith(f"-{installation_id()}"):
                    client.images.remove(tag, noprune=True)


if __name__ == "__main__":
    main()
