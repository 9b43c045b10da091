"""The Docker target against a real engine: serving images built offline from the local base
image, containers locked down, real inference, warm rebuilds, and the whole release flow
(deploy → canary → promote → roll back) through the gateway container.

Needs the CI Docker tier (`.ci/docker-tier.sh`): skipped without an engine, failed instead when
MODELDECK_REQUIRE_TIERS names "docker".
"""

from __future__ import annotations

import collections
import random
import re
import shutil
import socket
import subprocess
import time

import docker
import httpx
import pytest
from django.db.models.signals import post_save

from accounts import tokens
from deployments import services
from deployments.models import (
    Build,
    BuildStatus,
    Endpoint,
    EndpointKey,
    EndpointStatus,
    Target,
    TargetKind,
)
from deployments.reconciler import reconcile_endpoint, sweep_target
from deployments.targets import driver_for
from deployments.targets.base import LABEL_INSTALLATION, ServerSpec, installation_id
from deployments.targets.docker import images
from tests.conftest import tier_unavailable
from tests.deployments.conftest import make_version
from tests.deployments.load import assert_shifts_and_rollback_lose_no_request

pytestmark = [pytest.mark.docker, pytest.mark.slow]

BASE_IMAGE = "modeldeck/base:bookworm"


@pytest.fixture(scope="session")
def docker_engine():
    """The engine, the local base image and the wheelhouse, or a skip (a failure in CI)."""
    try:
        client = docker.from_env(version="auto", timeout=30)
        client.ping()
    except Exception as error:
        tier_unavailable("docker", f"no Docker engine is reachable: {error}")
    try:
        client.images.get(BASE_IMAGE)
    except Exception:
        tier_unavailable("docker", f"{BASE_IMAGE} is missing: run .ci/docker-tier.sh")
    try:
        images.wheelhouse_files()
    except images.BuildError as error:
        tier_unavailable("docker", str(error))
    return client


def _ours() -> list[str]:
    """Label filter of this test installation: other runs may share the engine."""
    return [f"{LABEL_INSTALLATION}={installation_id()}"]


def _remove_ours(client) -> None:
    """Everything this test installation started, gone."""
    ours = {"label": [f"{LABEL_INSTALLATION}={installation_id()}"]}
    for container in client.containers.list(all=True, filters=ours):
        container.remove(force=True)
    for network in client.networks.list(filters=ours):
        network.remove()
    prefix = f"mdk-{installation_id()}-"
    for volume in client.volumes.list():
        if volume.name.startswith(prefix):
            volume.remove(force=True)
    # Tags carry the installation id; the layers underneath stay cached for the next run.
    for image in client.images.list(name="modeldeck/serving"):
        for tag in image.tags:
            if tag.endswith(f"-{installation_id()}"):
                client.images.remove(tag, noprune=True)


@pytest.fixture
def engine(docker_engine, settings):
    settings.DEPLOYMENTS_DRAIN_SECONDS = 0.5
    settings.DEPLOYMENTS_READY_TIMEOUT_SECONDS = 60
    _remove_ours(docker_engine)
    yield docker_engine
    _remove_ours(docker_engine)


@pytest.fixture
def docker_target(team):
    return Target.objects.create(
        team=team, name="docker-dev", kind=TargetKind.DOCKER,
        config={"threads": 1, "gateway_port_range": "19500-19599", "mem_limit": "512m"},
    )  # fmt: skip


def build_now(version, target) -> Build:
    build = images.build_request(version=version, target=target)
    images.build_version_image(build.pk)
    build.refresh_from_db()
    assert build.status == BuildStatus.SUCCEEDED, build.log[-3000:]
    return build


# One client for every call: a new httpx client costs ~80 ms (it builds an SSL context).
HTTP = httpx.Client(timeout=10)


# Docker endpoints require an inference key from the start: each endpoint a test creates gets
# one (before its first reconcile, so the gateway knows it), and infer() sends it.
KEYS: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _inference_keys():
    def give_key(sender, instance, created, **kwargs):
        if created:
            plain, prefix, digest = tokens.generate("mdi")
            EndpointKey.objects.create(endpoint=instance, prefix=prefix, digest=digest)
            KEYS[instance.name] = plain

    post_save.connect(give_key, sender=Endpoint, dispatch_uid="docker-inference-keys")
    yield
    post_save.disconnect(sender=Endpoint, dispatch_uid="docker-inference-keys")
    KEYS.clear()


def key_header(model: str) -> dict[str, str]:
    return {"X-Api-Key": KEYS[model]} if model in KEYS else {}


def infer(url: str, model: str, value: float, headers: dict | None = None) -> tuple[float, str]:
    response = HTTP.post(
        f"{url}/v2/models/{model}/infer",
        json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [value]}]},
        headers={**key_header(model), **(headers or {})},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()["outputs"][0]["data"][0], response.headers["x-model-version"]


def step_cached(log: str, instruction: str) -> bool:
    """Whether the build step running `instruction` was taken from the cache."""
    lines = log.splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^Step \d+/\d+ : ", line) and instruction in line:
            following = lines[index + 1 : index + 3]
            return any("Using cache" in text for text in following)
    raise AssertionError(f"no step {instruction!r} in the build log")


@pytest.mark.django_db(transaction=True)
def test_serving_image_runs_locked_down_and_answers(engine, versions, docker_target, system):
    build = build_now(versions[1], docker_target)
    assert build.progress == 100
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", build.digest)
    assert build.image == (
        f"modeldeck/serving:version-{versions[1].pk}-build-{build.pk}-{installation_id()}"
    )
    assert build.base_image == BASE_IMAGE
    image = engine.images.get(build.digest)
    labels = image.labels
    assert labels["modeldeck.model"] == "adder"
    assert labels["modeldeck.model-version"] == "1"
    assert labels["modeldeck.sha256"] == versions[1].model_artifact.sha256
    assert not any(key.startswith("modeldeck.endpoint") for key in labels)
    print(f"\nserving image size: {image.attrs['Size'] / 1e6:.0f} MB")

    endpoint = services.endpoint_create(
        actor=system, name="locked", target=docker_target, version="adder:1"
    )
    driver = driver_for(docker_target)
    spec = ServerSpec(
        endpoint_id=endpoint.pk, endpoint_name="locked", version_id=versions[1].pk,
        version="adder:1", model_name="adder", version_number=1, release_number=1,
    )  # fmt: skip
    state = driver.ensure_server(endpoint=endpoint, spec=spec)
    container = engine.containers.get(state.handle)
    attrs = container.attrs
    assert attrs["Config"]["User"] == "10001:10001"
    assert attrs["HostConfig"]["CapDrop"] == ["ALL"]
    assert attrs["HostConfig"]["ReadonlyRootfs"] is True
    assert attrs["HostConfig"]["SecurityOpt"] == ["no-new-privileges:true"]
    assert attrs["HostConfig"]["Privileged"] is False
    assert attrs["HostConfig"]["Memory"] == 512 * 1024**2
    assert attrs["HostConfig"]["PidsLimit"] == 256
    assert set(attrs["HostConfig"]["Tmpfs"]) == {"/tmp"}
    bindings = attrs["HostConfig"]["PortBindings"]
    assert [binding["HostIp"] for binding in bindings["8080/tcp"]] == ["127.0.0.1"]
    assert attrs["Mounts"] == []
    assert not any("docker.sock" in str(bind) for bind in attrs["HostConfig"]["Binds"] or [])
    assert attrs["Image"] == build.digest
    assert attrs["Config"]["Labels"]["modeldeck.endpoint"] == str(endpoint.pk)
    assert attrs["Config"]["Labels"]["modeldeck.version"] == str(versions[1].pk)
    assert attrs["Config"]["Labels"]["modeldeck.release"] == "1"
    assert attrs["Config"]["Labels"]["modeldeck.role"] == "server"
    # Really unprivileged inside: no root, no writable root filesystem.
    result = container.exec_run(["python3", "-c", "import os; print(os.getuid(), os.getgid())"])
    assert result.output.decode().split() == ["10001", "10001"]
    result = container.exec_run(["sh", "-c", "touch /opt/model/x || echo refused"])
    assert "refused" in result.output.decode()

    deadline_state = None
    for _ in range(300):
        deadline_state = driver.observe(endpoint=endpoint).server(spec.key)
        if deadline_state is not None and deadline_state.ready:
            break
        time.sleep(0.1)
    assert deadline_state is not None and deadline_state.ready, deadline_state
    port = attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]
    answer, version = infer(f"http://127.0.0.1:{port}", "locked", 41.0)
    assert (answer, version) == (42.0, "adder:1")


@pytest.mark.django_db(transaction=True)
def test_new_version_rebuild_reuses_cached_wheel_layers(engine, versions, docker_target):
    first = build_now(versions[1], docker_target)
    # A model no earlier run has built, so its layer cannot come from the cache.
    fresh = make_version(versions[1].model, number=random.randint(10, 10**6))
    second = build_now(fresh, docker_target)
    assert second.digest != first.digest
    # The wheel layers come from the cache; only the model layer is new.
    assert step_cached(second.log, "pip install --quiet --no-deps /tmp/wheels/deps/*.whl")
    assert step_cached(second.log, "pip install --quiet --no-deps /tmp/wheels/runtime/*.whl")
    assert not step_cached(second.log, "COPY model/ /opt/model/")
    # Asking again reuses the succeeded build instead of building.
    assert images.build_request(version=fresh, target=docker_target).pk == second.pk
    size = engine.images.get(second.digest).attrs["Size"]
    print(f"\nserving image size: {size / 1e6:.0f} MB; warm rebuild log:\n{second.log[-1500:]}")


def _answers(url: str, count: int, headers: dict | None = None) -> collections.Counter:
    return collections.Counter(infer(url, "flow", 1.0, headers)[1] for _ in range(count))


def _converge(endpoint: Endpoint) -> Endpoint:
    result = reconcile_endpoint(endpoint_id=endpoint.pk)
    endpoint.refresh_from_db()
    assert result == "converged", (result, endpoint.status_reason)
    assert endpoint.status == EndpointStatus.LIVE
    return endpoint


@pytest.mark.django_db(transaction=True)
def test_deploy_canary_promote_rollback_through_the_gateway_container(
    engine, versions, docker_target, system
):
    endpoint = services.endpoint_create(
        actor=system, name="flow", target=docker_target, version="adder:1"
    )
    endpoint = _converge(endpoint)
    url = endpoint.url
    assert re.fullmatch(r"http://127\.0\.0\.1:195\d\d", url)
    assert infer(url, "flow", 1.0) == (2.0, "adder:1")
    # The gateway container checks the key: none, or a wrong one, is refused.
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}]}
    for headers in ({}, {"X-Api-Key": KEYS["flow"][:-1]}):
        refused = HTTP.post(f"{url}/v2/models/flow/infer", json=body, headers=headers)
        assert refused.status_code == 401, refused.text

    services.endpoint_deploy(actor=system, endpoint=endpoint, version="adder:2", weight=10)
    endpoint = _converge(endpoint)
    assert endpoint.url == url
    split = _answers(url, 200)
    assert set(split) == {"adder:1", "adder:2"}
    assert 4 <= split["adder:2"] <= 45, split
    assert infer(url, "flow", 1.0, {"X-Model-Version": "adder:2"}) == (3.0, "adder:2")

    services.endpoint_promote(actor=system, endpoint=endpoint)
    endpoint = _converge(endpoint)
    assert _answers(url, 20) == {"adder:2": 20}
    running = {
        c.labels["modeldeck.version"]
        for c in engine.containers.list(
            filters={
                "label": [*_ours(), f"modeldeck.endpoint={endpoint.pk}", "modeldeck.role=server"]
            }
        )
    }
    assert running == {str(versions[2].pk)}

    # Back to release 1 (the default would restore release 2, the canary split).
    rollback = services.endpoint_rollback(actor=system, endpoint=endpoint, release_number=1)
    assert rollback.restores.number == 1
    endpoint = _converge(endpoint)
    assert endpoint.url == url
    assert _answers(url, 20) == {"adder:1": 20}
    assert infer(url, "flow", 5.0) == (6.0, "adder:1")

    # The serving images were built once per version and reused on the way back.
    assert Build.objects.filter(target=docker_target, status=BuildStatus.SUCCEEDED).count() == 2

    services.endpoint_stop(actor=system, endpoint=endpoint)
    assert reconcile_endpoint(endpoint_id=endpoint.pk) == "stopped"
    ours = {"label": [f"{LABEL_INSTALLATION}={installation_id()}"]}
    assert engine.containers.list(all=True, filters=ours) == []
    assert engine.networks.list(filters=ours) == []


@pytest.mark.django_db(transaction=True)
def test_weight_shifts_and_rollback_under_load_lose_no_request(
    engine, versions, docker_target, system
):
    endpoint = _converge(
        services.endpoint_create(
            actor=system, name="steady", target=docker_target, version="adder:1"
        )
    )
    assert_shifts_and_rollback_lose_no_request(
        system, endpoint, _converge, headers=key_header(endpoint.name)
    )
    services.endpoint_stop(actor=system, endpoint=endpoint)
    assert reconcile_endpoint(endpoint_id=endpoint.pk) == "stopped"


@pytest.mark.django_db(transaction=True)
def test_sweep_removes_containers_of_endpoints_that_no_longer_exist(
    engine, versions, docker_target, system
):
    kept = services.endpoint_create(
        actor=system, name="kept", target=docker_target, version="adder:1"
    )
    _converge(kept)
    # A server left behind by an endpoint that is gone (its row deleted while it ran).
    ghost = Endpoint(pk=987654, name="ghost", team=kept.team, target=docker_target)
    spec = ServerSpec(
        endpoint_id=ghost.pk, endpoint_name="ghost", version_id=versions[1].pk,
        version="adder:1", model_name="adder", version_number=1, release_number=1,
    )  # fmt: skip
    driver_for(docker_target).ensure_server(endpoint=ghost, spec=spec)
    ours = {"label": [f"{LABEL_INSTALLATION}={installation_id()}"]}
    assert len(engine.containers.list(all=True, filters=ours)) == 3

    assert sweep_target(target=docker_target) == 1

    left = engine.containers.list(all=True, filters=ours)
    assert {c.labels["modeldeck.endpoint"] for c in left} == {str(kept.pk)}
    assert len(left) == 2
    assert engine.networks.list(names=[f"mdk-{installation_id()}-e{ghost.pk}"]) == []
    assert infer(Endpoint.objects.get(pk=kept.pk).url, "kept", 1.0) == (2.0, "adder:1")


@pytest.mark.django_db(transaction=True)
def test_killed_containers_heal_on_the_next_reconcile_with_the_same_url(
    engine, versions, docker_target, system
):
    endpoint = services.endpoint_create(
        actor=system, name="heal", target=docker_target, version="adder:1"
    )
    endpoint = _converge(endpoint)
    url = endpoint.url
    ours = {"label": [f"{LABEL_INSTALLATION}={installation_id()}"]}
    for container in engine.containers.list(filters=ours):
        container.kill()
    # Whatever the engine's restart policy did meanwhile, the reconciler converges again.
    result = reconcile_endpoint(endpoint_id=endpoint.pk)
    endpoint.refresh_from_db()
    assert result in ("converged", "unchanged"), endpoint.status_reason
    assert endpoint.url == url
    deadline = time.monotonic() + 30
    while True:
        try:
            assert infer(url, "heal", 2.0) == (3.0, "adder:1")
            break
        except (httpx.HTTPError, AssertionError):
            if time.monotonic() > deadline:
                raise
            reconcile_endpoint(endpoint_id=endpoint.pk)
            time.sleep(0.2)


@pytest.fixture
def local_registry(tmp_path):
    """A throwaway registry on 127.0.0.1 (Debian's docker-registry; the engine allows plain
    HTTP to loopback registries)."""
    binary = shutil.which("docker-registry")
    if binary is None:
        tier_unavailable("docker", "docker-registry is not installed: run .ci/docker-tier.sh")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    process = subprocess.Popen(
        [binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the local registry did not start"
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        client = docker.from_env(version="auto")
        _remove_ours(client)
        for image in client.images.list():
            names = image.tags + image.attrs.get("RepoDigests", [])
            if any(name.startswith(f"127.0.0.1:{port}/") for name in names):
                client.images.remove(image.id, force=True, noprune=True)


@pytest.mark.django_db(transaction=True)
def test_pushed_images_are_deployed_by_digest_and_pulled_when_absent(
    engine, versions, team, system, local_registry
):
    repository = f"{local_registry}/modeldeck/serving"
    target = Target.objects.create(
        team=team, name="docker-push", kind=TargetKind.DOCKER,
        config={"threads": 1, "gateway_port_range": "19700-19799",
                "registry": {"repository": repository}},
    )  # fmt: skip
    build = build_now(versions[3], target)
    assert (
        build.image == f"{repository}:version-{versions[3].pk}-build-{build.pk}-{installation_id()}"
    )
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", build.digest)
    reference = images.deploy_reference(build)
    assert reference == f"{repository}@{build.digest}"
    # The registry serves the manifest under that digest.
    manifest = httpx.get(
        f"http://{local_registry}/v2/modeldeck/serving/manifests/{build.digest}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    assert manifest.status_code == 200

    # Gone from the engine: the driver pulls it back by digest to start the server.
    engine.images.remove(engine.images.get(reference).id, force=True)
    endpoint = services.endpoint_create(
        actor=system, name="pushed", target=target, version="adder:3"
    )
    endpoint = _converge(endpoint)
    assert infer(endpoint.url, "pushed", 1.0) == (4.0, "adder:3")
    server = engine.containers.list(
        filters={"label": [*_ours(), f"modeldeck.endpoint={endpoint.pk}", "modeldeck.role=server"]}
    )[0]
    assert server.attrs["Config"]["Image"] == reference
