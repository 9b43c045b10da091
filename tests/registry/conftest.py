"""Registry fixtures: a model of team alpha, upload helpers, and a view of what is on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile

from accounts.models import AuditEvent
from registry import services, tasks
from registry.models import Artifact, ModelVersion
from registry.uploads import HashedUpload
from tests.registry import onnx_files


def stored_files() -> set[str]:
    """Every file in the artifact folder, relative to it."""
    root = Path(settings.ARTIFACT_ROOT)
    if not root.exists():
        return set()
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()}


@pytest.fixture
def upload_temp_dir(tmp_path, settings):
    """Uploads' temporary files go here, so a test can see that none is left behind."""
    folder = tmp_path / "uploads"
    folder.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(folder)
    return folder


@pytest.fixture
def nothing_left_behind(upload_temp_dir):
    """Assert, after the test, that no row, stored file or temporary file was added."""
    before = (stored_files(), ModelVersion.objects.count(), Artifact.objects.count())
    yield
    assert stored_files() == before[0]
    assert ModelVersion.objects.count() == before[1]
    assert Artifact.objects.count() == before[2]
    assert list(upload_temp_dir.iterdir()) == []


@pytest.fixture
def scientist_actor(scientist, team, make_actor):
    return make_actor(scientist, team)


@pytest.fixture
def deployer_actor(deployer, team, make_actor):
    return make_actor(deployer, team)


@pytest.fixture
def registered(team, scientist_actor):
    """The model `iris` of team alpha, with no versions yet."""
    return services.model_create(
        actor=scientist_actor,
        team=team,
        name="iris",
        description="Iris flowers",
        tags={"task": "classification"},
    )


@pytest.fixture
def onnx_path(tmp_path):
    """`onnx_path(model_proto, name)` → the model saved in a fresh file."""

    def save(model, name: str = "model.onnx") -> Path:
        return onnx_files.save(model, tmp_path / name)

    return save


def as_upload(
    content: bytes | Path, name: str = "model.onnx", content_type: str = "application/octet-stream"
):
    """A multipart file for the test client."""
    data = content.read_bytes() if isinstance(content, Path) else content
    return SimpleUploadedFile(name, data, content_type=content_type)


def raw_multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> dict:
    """A multipart body written byte by byte, so file names reach the server exactly as given
    (the test client would strip their directories first). Returns post() keyword arguments."""
    boundary = "modeldeck-test-boundary-7d1c"
    parts = []
    for name, value in fields.items():
        header = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
        parts.append(header.encode() + value.encode() + b"\r\n")
    for name, (file_name, data) in files.items():
        header = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{file_name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        )
        parts.append(header.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return {"data": b"".join(parts), "content_type": f"multipart/form-data; boundary={boundary}"}


def register(actor, model, path: Path, **fields) -> ModelVersion:
    """Register a file through the service, as the API would."""
    return services.version_register(
        actor=actor, model=model, file=HashedUpload.from_path(path), **fields
    )


def validated(version: ModelVersion) -> ModelVersion:
    """Run the validation task in-process, as a worker would, and reload the row."""
    tasks.validate_version(version.pk)
    version.refresh_from_db()
    return version


def audit_actions() -> list[str]:
    return list(AuditEvent.objects.order_by("id").values_list("action", flat=True))
