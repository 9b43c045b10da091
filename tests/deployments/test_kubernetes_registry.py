"""A Kubernetes target with a real registry: deploying through the API builds the serving image
on the real Docker engine, pushes it to Debian's `docker-registry` (the CNCF distribution
server, htpasswd auth, on 127.0.0.1), and the applied manifests pin the digest the registry
serves. Only the cluster's API server is the protocol-level fake (k8s_fake_api.py); the image
pulled back from the registry by that digest then answers an Open Inference Protocol request.

Needs the CI Docker tier (`.ci/docker-tier.sh`, which also installs docker-registry): skipped
without it, failed instead when MODELDECK_REQUIRE_TIERS names "docker".
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time

import bcrypt
import docker
import httpx
import pytest
import yaml
from django.urls import reverse

from deployments.models import Build, BuildStatus, Endpoint, EndpointStatus
from deployments.reconciler import reconcile_endpoint
from deployments.targets.kubernetes.validation import validate_manifest
from tests.conftest import tier_unavailable
from tests.deployments.k8s_fake_api import FakeKubernetes
from tests.deployments.test_docker_engine import BASE_IMAGE, _remove_ours, docker_engine

pytestmark = [pytest.mark.docker, pytest.mark.slow]

__all__ = ["docker_engine"]  # the session fixture, shared with the Docker engine tests

NAMESPACE = "models"
USER_VARIABLE = "MODELDECK_TARGET_ALPHA_REGISTRY_USER"
PASSWORD_VARIABLE = "MODELDECK_TARGET_ALPHA_REGISTRY_PASSWORD"
USERNAME = "robot-k8s"
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
    ]
)


def _free_port() -> int:
    """A free port in this developer's range (LOCAL_TARGET_PORT_RANGE), else any."""
    low, _, high = os.environ.get("LOCAL_TARGET_PORT_RANGE", "").partition("-")
    candidates = range(int(low), int(high) + 1) if low.isdigit() and high.isdigit() else [0]
    for port in candidates:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise RuntimeError("no free port")


class Registry:
    """A running docker-registry with one htpasswd user."""

    def __init__(self, folder, password: str) -> None:
        binary = shutil.which("docker-registry")
        if binary is None:
            tier_unavailable("docker", "docker-registry is not installed: run .ci/docker-tier.sh")
        self.port = _free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.auth = (USERNAME, password)
        htpasswd = folder / "htpasswd"
        htpasswd.write_text(
            f"{USERNAME}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}\n"
        )
        config = folder / "registry.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "version": 0.1,
                    "log": {"level": "warn"},
                    "storage": {"filesystem": {"rootdirectory": str(folder / "data")}},
                    "http": {"addr": self.host},
                    "auth": {"htpasswd": {"realm": "modeldeck-test", "path": str(htpasswd)}},
                }
            )
        )
        self.log = open(folder / "registry.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [binary, "serve", str(config)], stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                # Up, and asking for credentials.
                if httpx.get(f"http://{self.host}/v2/", timeout=1).status_code == 401:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise AssertionError((folder / "registry.log").read_text()[-2000:])
            time.sleep(0.1)

    def manifest(self, repository_path: str, reference: str, *, auth=True) -> httpx.Response:
        """GET /v2/<name>/manifests/<reference> through the registry's HTTP API."""
        return httpx.get(
            f"http://{self.host}/v2/{repository_path}/manifests/{reference}",
            headers={"Accept": MANIFEST_TYPES},
            auth=self.auth if auth else None,
            timeout=10,
        )

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.log.close()


@pytest.fixture
def registry(tmp_path, docker_engine):
    folder = tmp_path / "registry"
    folder.mkdir()
    running = Registry(folder, secrets.token_urlsafe(16))
    try:
        yield running
    finally:
        running.stop()
        _remove_ours(docker_engine)
        for image in docker_engine.images.list():
            names = image.tags + image.attrs.get("RepoDigests", [])
            if any(name.startswith(f"{running.host}/") for name in names):
                docker_engine.images.remove(image.id, force=True, noprune=True)


@pytest.fixture
def cluster(tmp_path, settings):
    fake = FakeKubernetes()
    # Team alpha's credentials folder (targets may name only files under it).
    settings.TARGET_CREDENTIALS_DIR = tmp_path / "credentials"
    (tmp_path / "credentials" / "alpha").mkdir(parents=True)
    fake.kubeconfig = fake.write_kubeconfig(tmp_path / "credentials" / "alpha" / "kubeconfig")
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.DEPLOYMENTS_DRAIN_SECONDS = 0
    settings.DEPLOYMENTS_READY_TIMEOUT_SECONDS = 5


def _target_config(cluster, repository: str) -> dict:
    return {
        "kubeconfig": str(cluster.kubeconfig),
        "context": "fake",
        "namespace": NAMESPACE,
        "switch_timeout_seconds": 2,
        "build": {
            "base_image": BASE_IMAGE,
            "registry": {
                "repository": repository,
                "username_env": USER_VARIABLE,
                "password_env": PASSWORD_VARIABLE,
            },
        },
    }


def _serve(engine, image: str, deployment: dict, port: int):
    """Run the pulled image as the Deployment's pod would: its command, arguments, user and
    read-only root with a /tmp of its own."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    user = deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    return engine.containers.run(
        image,
        command=[*container["command"], *container["args"]],
        name=f"k8s-registry-serve-{port}",
        user=f"{user}:{user}",
        read_only=True,
        tmpfs={"/tmp": "size=64m"},  # the pod's emptyDir
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        ports={"8080/tcp": ("127.0.0.1", port)},
        mem_limit="512m",
        detach=True,
    )


def _wait_ready(url: str, container) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        container.reload()
        if time.monotonic() > deadline or container.status == "exited":
            raise AssertionError(container.logs()[-3000:].decode(errors="replace"))
        time.sleep(0.3)


@pytest.mark.django_db(transaction=True)
def test_a_deploy_builds_pushes_and_pins_the_digest_the_registry_serves(
    docker_engine, registry, cluster, versions, admin_member, deployer, team, api_for,
    monkeypatch, client,
):  # fmt: skip
    monkeypatch.setenv(USER_VARIABLE, USERNAME)
    monkeypatch.setenv(PASSWORD_VARIABLE, registry.auth[1])
    repository = f"{registry.host}/alpha/serving"

    # The team admin adds the cluster; a deployer deploys to it, both through the API.
    admin = api_for(admin_member, team)
    response = admin.post(
        "/api/v1/targets/",
        {"name": "cluster", "kind": "kubernetes", "config": _target_config(cluster, repository)},
        format="json",
    )
    assert response.status_code == 201, response.content
    deployer_api = api_for(deployer, team)
    response = deployer_api.post(
        "/api/v1/endpoints/", {"name": "fraud", "target": "cluster", "version": "adder:2"},
        format="json",
    )  # fmt: skip
    assert response.status_code == 201, response.content
    endpoint = Endpoint.objects.get(name="fraud")
    assert reconcile_endpoint(endpoint_id=endpoint.pk) == "converged"
    endpoint.refresh_from_db()
    assert endpoint.status == EndpointStatus.LIVE, endpoint.status_reason

    # One build, pushed, its digest recorded; the log and progress are the build page's.
    (build,) = Build.objects.all()
    assert (build.status, build.progress, build.repository) == (
        BuildStatus.SUCCEEDED, 100, repository
    )  # fmt: skip
    assert build.digest.startswith("sha256:") and len(build.digest) == 71
    assert f"Pushed {repository}@{build.digest}" in build.log
    assert registry.auth[1] not in build.log
    client.force_login(deployer)
    page = client.get(reverse("deployments:build-detail", args=[build.pk]))
    assert page.status_code == 200
    assert build.digest in page.content.decode()
    assert f"Pushed to <code>{repository}</code>" in page.content.decode()

    # The applied Deployment names the image by the digest the registry serves.
    pinned = f"{repository}@{build.digest}"
    version_id = versions[2].pk
    deployment = cluster.get("Deployment", f"md-fraud-v{version_id}", NAMESPACE)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == pinned
    gateway = cluster.get("Deployment", "md-fraud-gateway", NAMESPACE)
    assert gateway["spec"]["template"]["spec"]["containers"][0]["image"] == pinned
    served = registry.manifest("alpha/serving", build.digest)
    assert served.status_code == 200, served.text
    assert served.headers["Docker-Content-Digest"] == build.digest
    # The registry wants the credentials the build pushed with.
    assert registry.manifest("alpha/serving", build.digest, auth=False).status_code == 401

    # The GitOps export: what `kubectl apply -f` takes, every object valid, images by digest.
    response = deployer_api.get("/api/v1/endpoints/fraud/releases/1/manifests/")
    assert response.status_code == 200, response.content
    documents = [d for d in yaml.safe_load_all(response.content.decode()) if d]
    assert {d["kind"] for d in documents} == {"Secret", "ConfigMap", "Service", "Deployment"}
    for document in documents:
        validate_manifest(document)
    assert {
        container["image"]
        for document in documents
        if document["kind"] == "Deployment"
        for container in document["spec"]["template"]["spec"]["containers"]
    } == {pinned}

    # Pulled back by digest from the registry, the image starts and answers a v2 request.
    docker_engine.images.remove(docker_engine.images.get(pinned).id, force=True, noprune=True)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_engine.images.get(pinned)
    pulled = docker_engine.images.pull(
        repository,
        tag=build.digest,
        auth_config={"username": USERNAME, "password": registry.auth[1]},
    )
    assert pinned in pulled.attrs["RepoDigests"]
    port = _free_port()
    container = _serve(docker_engine, pinned, deployment, port)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, container)
        answer = httpx.post(
            f"{url}/v2/models/fraud/infer",
            json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 1], "data": [1, 5]}]},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["data"] == [3.0, 7.0]  # adder:2 adds 2
        assert answer.headers["x-model-version"] == "adder:2"
    finally:
        container.remove(force=True)


@pytest.mark.django_db(transaction=True)
def test_the_same_registry_reuses_the_build_and_wrong_credentials_fail_readably(
    docker_engine, registry, cluster, versions, admin_member, deployer, team, api_for, monkeypatch
):
    monkeypatch.setenv(USER_VARIABLE, USERNAME)
    monkeypatch.setenv(PASSWORD_VARIABLE, "not-the-password")
    repository = f"{registry.host}/alpha/serving"
    admin, deployer_api = api_for(admin_member, team), api_for(deployer, team)
    for name in ("cluster", "cluster-two"):
        response = admin.post(
            "/api/v1/targets/",
            {"name": name, "kind": "kubernetes", "config": _target_config(cluster, repository)},
            format="json",
        )
        assert response.status_code == 201, response.content

    # Wrong credentials: the registry refuses the push and the deploy says so.
    deployer_api.post(
        "/api/v1/endpoints/", {"name": "first", "target": "cluster", "version": "adder:1"},
        format="json",
    )  # fmt: skip
    first = Endpoint.objects.get(name="first")
    assert reconcile_endpoint(endpoint_id=first.pk) == "failed"
    (failed,) = Build.objects.all()
    assert failed.status == BuildStatus.FAILED
    assert failed.status_reason.startswith("The registry refused the push:")
    assert "unauthorized" in failed.status_reason.lower()
    assert cluster.names("Deployment", NAMESPACE) == []

    # With the right ones (read from the worker's environment at build time) it goes through,
    # once: the second target pushing to the same registry deploys the same build.
    monkeypatch.setenv(PASSWORD_VARIABLE, registry.auth[1])
    Build.objects.filter(pk=failed.pk).update(finished_at=failed.created_at.replace(year=2000))
    assert reconcile_endpoint(endpoint_id=first.pk) == "converged"
    deployer_api.post(
        "/api/v1/endpoints/", {"name": "second", "target": "cluster-two", "version": "adder:1"},
        format="json",
    )  # fmt: skip
    assert reconcile_endpoint(endpoint_id=Endpoint.objects.get(name="second").pk) == "converged"
    succeeded = Build.objects.filter(status=BuildStatus.SUCCEEDED)
    assert succeeded.count() == 1
    pinned = f"{repository}@{succeeded.get().digest}"
    version_id = versions[1].pk
    images_used = [
        cluster.get("Deployment", f"md-{name}-v{version_id}", NAMESPACE)["spec"]["template"][
            "spec"
        ]["containers"][0]["image"]
        for name in ("first", "second")
    ]
    assert images_used == [pinned, pinned]
    assert registry.manifest("alpha/serving", succeeded.get().digest).status_code == 200
