"""Replicas and rollback on the Docker target: prints, asserts nothing.

    python bench/scale_docker.py          (after .ci/docker-tier.sh; needs Debian's `wrk`)

Measures, on a throwaway database and a real Docker engine, one endpoint whose gateway
container balances one version across its server containers:
- requests per second through the gateway with 1 and with 3 server containers of a version,
  interleaved (1, 3, 1, 3: each figure is the best of its rounds), and their ratio, for two
  versions: a trivial one (the gateway's proxying dominates) and one whose inference costs
  about a millisecond (20 products with a 512 x 512 matrix). All containers and wrk share this
  machine's cores (printed), so the gain is bounded by them;
- seconds from a rollback call to the last answer of the version rolled back from, under load
  (two clients without pause; the reconcile runs at once, as a worker would): inside the warm
  window (a gateway route switch) and outside it (the old version's server must start), and
  their ratio, on the Docker and on the local target; failed requests are counted in both.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")

import django  # noqa: E402

django.setup()

import hashlib  # noqa: E402

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from deploy_docker import register  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.files.base import ContentFile  # noqa: E402
from django.core.management import call_command  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from accounts.actor import Actor  # noqa: E402
from accounts.models import Team  # noqa: E402
from deployments import services  # noqa: E402
from deployments.models import Endpoint, Target, TargetKind  # noqa: E402
from deployments.reconciler import reconcile_endpoint  # noqa: E402
from deployments.targets.base import LABEL_INSTALLATION, installation_id  # noqa: E402
from deployments.targets.docker.driver import docker_client, docker_settings  # noqa: E402
from registry.models import Approval, Artifact, ArtifactKind, ModelVersion, RegisteredModel  # noqa: E402
from registry.storage import artifact_storage, new_storage_key  # noqa: E402

BODY = '{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}]}'
ROUNDS = 2
ROUND_SECONDS = 4
CONNECTIONS = 16


def heavy_model() -> bytes:
    """y = sum(relu(... relu(x * ones[1, 512]) @ W ...)) with 20 products by a 512 x 512 W."""
    generator = np.random.default_rng(7)
    weights = numpy_helper.from_array(
        (generator.standard_normal((512, 512)) / 32).astype(np.float32), "W"
    )
    ones = numpy_helper.from_array(np.ones((1, 512), np.float32), "ones")
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    nodes = [helper.make_node("MatMul", ["x", "ones"], ["h0"])]
    for step in range(20):
        nodes.append(helper.make_node("MatMul", [f"h{step}", "W"], [f"m{step}"]))
        nodes.append(helper.make_node("Relu", [f"m{step}"], [f"h{step + 1}"]))
    nodes.append(helper.make_node("ReduceSum", ["h20", "axes"], ["y"], keepdims=1))
    graph = helper.make_graph(
        nodes, "heavy",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        initializer=[weights, ones, axes],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def register_heavy(model: RegisteredModel) -> ModelVersion:
    content = heavy_model()
    version = ModelVersion.objects.create(
        model=model, number=1, status="ready", approval=Approval.APPROVED,
        signature={"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}],
                   "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}]},
    )  # fmt: skip
    key = new_storage_key(model_id=model.pk, kind=ArtifactKind.MODEL)
    artifact_storage().save(key, ContentFile(content))
    Artifact.objects.create(
        version=version, kind=ArtifactKind.MODEL, storage_key=key, size=len(content),
        sha256=hashlib.sha256(content).hexdigest(), content_type="application/octet-stream",
    )  # fmt: skip
    RegisteredModel.objects.filter(pk=model.pk).update(last_version_number=1)
    return version


def scaled_throughput(system, target, version: ModelVersion, name: str) -> dict[int, float]:
    """Best requests/s at 1 and 3 containers of `version` on a new endpoint, interleaved."""
    endpoint = services.endpoint_create(
        actor=system, name=name, target=target, version=version.reference
    )
    converge(endpoint)
    url = f"{endpoint.url}/v2/models/{endpoint.name}/infer"
    best = {1: 0.0, 3: 0.0}
    current = 1
    for _ in range(ROUNDS):
        for replicas in (1, 3):
            if replicas != current:
                services.endpoint_scale(
                    actor=system, endpoint=endpoint, version=version.reference, replicas=replicas
                )
                converge(endpoint)
                current = replicas
            best[replicas] = max(best[replicas], requests_per_second(url))
    services.endpoint_stop(actor=system, endpoint=endpoint)
    reconcile_endpoint(endpoint_id=endpoint.pk)
    return best


def converge(endpoint: Endpoint) -> None:
    result = reconcile_endpoint(endpoint_id=endpoint.pk)
    endpoint.refresh_from_db()
    if result != "converged":
        raise SystemExit(f"reconcile said {result}: {endpoint.status_reason}")


def requests_per_second(url: str) -> float:
    """wrk through the gateway (after a one-second warm-up); refuses a run with errors."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            f"wrk.method = \"POST\"\nwrk.body = '{BODY}'\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
    base = ["wrk", "-t2", f"-c{CONNECTIONS}", "-s", script.name, url]
    subprocess.run([*base[:2], "-d1s", *base[2:]], capture_output=True, check=True)
    output = subprocess.run(
        [*base[:2], f"-d{ROUND_SECONDS}s", *base[2:]], capture_output=True, text=True, check=True
    ).stdout
    os.unlink(script.name)
    if "Non-2xx" in output or "Socket errors" in output:
        raise SystemExit(f"errors during the run:\n{output}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))


class Answers:
    """Two clients without pause; (answered at, version) of every success, and failures."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stopping = threading.Event()
        self.answers: list[tuple[float, str]] = []
        self.failures = 0
        self.threads = [threading.Thread(target=self.run) for _ in range(2)]

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stopping.is_set():
                try:
                    response = client.post(
                        self.url, content=BODY, headers={"Content-Type": "application/json"}
                    )
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    self.answers.append((time.monotonic(), response.headers["x-model-version"]))
                else:
                    self.failures += 1

    def __enter__(self) -> Answers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join()


def rollback_seconds(system, endpoint: Endpoint, rolled_back_from: str) -> tuple[float, int]:
    """Seconds from the rollback call to the last answer of `rolled_back_from`, and failures."""
    url = f"{endpoint.url}/v2/models/{endpoint.name}/infer"
    with Answers(url) as load:
        time.sleep(1.0)
        called = time.monotonic()
        services.endpoint_rollback(actor=system, endpoint=endpoint)
        converge(endpoint)
        time.sleep(1.0)
    last = max(at for at, version in load.answers if version == rolled_back_from)
    return last - called, load.failures


def rollback_timings(system, target, first, second, name: str) -> list[tuple[float, int]]:
    """Deploy `second`, roll back to `first` under load: inside the warm window, then outside
    it (the first version's server is stopped, so it must start)."""
    endpoint = services.endpoint_create(
        actor=system, name=name, target=target, version=first.reference
    )
    converge(endpoint)
    timings = []
    for seconds in (300.0, 0.0):
        settings.DEPLOYMENTS_WARM_SECONDS = seconds
        services.endpoint_deploy(actor=system, endpoint=endpoint, version=second.reference)
        converge(endpoint)
        timings.append(rollback_seconds(system, endpoint, second.reference))
    services.endpoint_stop(actor=system, endpoint=endpoint)
    reconcile_endpoint(endpoint_id=endpoint.pk)
    return timings


def main() -> None:
    call_command("migrate", verbosity=0)
    system = Actor.system("bench")
    team = Team.objects.create(name=f"bench-scale-{random.randint(1, 10**9)}")
    target = Target.objects.create(
        team=team, name=f"docker-scale-{team.pk}", kind=TargetKind.DOCKER,
        config={"threads": 1, "gateway_port_range": "22700-22799"},
    )  # fmt: skip
    model = RegisteredModel.objects.create(team=team, name=f"scale-adder-{team.pk}")
    first, second = register(model, 1, 1.0), register(model, 2, 2.0)
    client = docker_client(docker_settings(target.config))
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    try:
        heavy = register_heavy(RegisteredModel.objects.create(team=team, name=f"heavy-{team.pk}"))
        for label, version, name in (
            ("trivial adder", first, "light"), ("~1 ms matrix model", heavy, "heavy"),
        ):  # fmt: skip
            best = scaled_throughput(system, target, version, f"{name}-{team.pk}")
            print(
                f"{label}: requests/s through the gateway, {CONNECTIONS} connections, best of "
                f"{ROUNDS} x {ROUND_SECONDS} s: 1 container {best[1]:.0f}, 3 containers "
                f"{best[3]:.0f}; ratio 3/1: {best[3] / best[1]:.2f}"
            )
        local = Target.objects.create(
            team=team, name=f"local-scale-{team.pk}", kind=TargetKind.LOCAL,
            config={"threads": 1},
        )  # fmt: skip
        for kind, where in (("docker", target), ("local", local)):
            (warm, warm_failed), (cold, cold_failed) = rollback_timings(
                system, where, first, second, f"{kind}-{team.pk}"
            )
            print(
                f"{kind}: rollback call → last answer of the rolled-back version: inside the "
                f"warm window {warm:.2f} s ({warm_failed} failed requests), outside it "
                f"{cold:.2f} s ({cold_failed} failed); ratio warm/cold: {warm / cold:.2f}"
            )
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
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
