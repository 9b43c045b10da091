"""Where artifacts live: server-generated keys in the artifact storage, never user file names."""

import json
import os
import shutil
import uuid
from pathlib import Path

from django.core.files.storage import Storage, storages

from registry.models import Artifact, ArtifactKind, ModelVersion
from registry.validation import write_smoke_file

_SUFFIX = {ArtifactKind.MODEL: ".onnx", ArtifactKind.REFERENCE: ".csv"}


def artifact_storage() -> Storage:
    """The configured artifact storage (a folder under var/ or an S3 bucket)."""
    return storages["artifacts"]


def new_storage_key(*, model_id: int, kind: str) -> str:
    """A fresh key made only of ids and a random uuid: nothing the uploader chose."""
    return f"models/{model_id}/{uuid.uuid4().hex}{_SUFFIX.get(kind, '.bin')}"


def open_artifact(artifact: Artifact):
    """The stored file, open for reading; a readable error if storage lost it."""
    try:
        return artifact_storage().open(artifact.storage_key, "rb")
    except OSError:
        from common.errors import ApplicationError

        raise ApplicationError(
            f"The stored file of {artifact.version} is missing from the artifact storage.",
            status=404,
        ) from None


def local_path(artifact: Artifact) -> Path | None:
    """The artifact's path on this machine when storage is a local folder, else None."""
    try:
        return Path(artifact_storage().path(artifact.storage_key))
    except NotImplementedError:
        return None


def materialize_version(version: ModelVersion, folder: Path) -> Path:
    """Lay a version out the way the runtime serves it: `model.onnx` and, if profiled,
    `reference.json` in `folder`. Hard-links when possible so a big model is not copied."""
    folder.mkdir(parents=True, exist_ok=True)
    artifact = version.artifacts.get(kind=ArtifactKind.MODEL)
    destination = folder / "model.onnx"
    temporary = folder / f".model.onnx.{uuid.uuid4().hex}"
    source = local_path(artifact)
    if source is not None:
        try:
            os.link(source, temporary)
        except OSError:
            shutil.copyfile(source, temporary)
    else:
        with (
            artifact_storage().open(artifact.storage_key, "rb") as stream,
            open(temporary, "wb") as out,
        ):
            shutil.copyfileobj(stream, out, length=1024 * 1024)
    os.replace(temporary, destination)
    reference = folder / "reference.json"
    if version.reference_profile:
        reference.write_text(json.dumps(version.reference_profile))
    elif reference.exists():
        reference.unlink()
    write_smoke_file(folder, version.smoke_input)
    return destination
