"""Serving images: built offline on a Docker engine, kept there or pushed to a registry.

A Docker target's image stays on its engine (one per version × target × base image) unless the
target names a registry. A Kubernetes target always names one in its `build` setting (the
engine to build on and the repository its cluster pulls from). A pushed image is one per
version × repository × base image: any later deploy of the version to a target pushing to the
same repository reuses it.

The build context is assembled in memory from an explicit file list: the fixed Dockerfile template
(`deployments/targets/docker/Dockerfile.serving`), the dependency wheels, the runtime wheel and
the model as the last layer. Nothing a user typed becomes a Dockerfile instruction or a build
argument: the model's name, number and sha256 reach the image as labels (each checked against a
strict pattern) and inside `model/modeldeck.json`. The engine builds with networking off from the
wheelhouse that `deployments/targets/docker/prepare_wheelhouse.py` prepares (the CI Docker tier
runs it). Progress streams into the Build row; the image is recorded by id (and by registry digest
when the target pushes) and deployed by that, never by a mutable tag.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from common.credentials import CredentialError, credential_environment
from deployments.models import Build, BuildStatus, EventLevel, Target, TargetKind
from deployments.targets.base import DriverError, installation_id
from deployments.targets.docker.driver import (
    IMAGE_REFERENCE,
    DockerSettings,
    docker_client,
    docker_errors,
    docker_settings,
)
from registry.models import MODEL_NAME_PATTERN, ArtifactKind, ModelVersion
from registry.storage import artifact_storage
from registry.validation import SMOKE_FILE, smoke_file_bytes

logger = logging.getLogger(__name__)

DOCKERFILE_TEMPLATE = Path(__file__).resolve().parent / "Dockerfile.serving"
LOCAL_REPOSITORY = "modeldeck/serving"
DEFAULT_PLATFORM = "linux/amd64"
# The build log kept on the row; past this only the newest part stays (errors come last).
LOG_LIMIT_CHARACTERS = 64 * 1024
# The context stays in memory up to this size and spills to a temporary file beyond it.
CONTEXT_SPOOL_BYTES = 256 * 1024 * 1024
# Memory of each build step's container (pip installing onnxruntime needs a few hundred MB).
BUILD_MEMORY_BYTES = 2 * 1024**3
BUILD_HTTP_TIMEOUT_SECONDS = 900
# A running build's worker touches its row this many times per DEPLOYMENTS_BUILD_STALE_SECONDS
# (even while the engine prints nothing), so a row that stops moving lost its worker.
HEARTBEATS_PER_STALE_PERIOD = 4
# A failed build is not retried for this long, so a broken version does not rebuild every run.
FAILED_BUILD_RETRY_SECONDS = 120
# How long a reconcile waits for a build another worker runs (under the reconcile lease); the
# next reconcile picks the image up once it is done.
BUILD_WAIT_SECONDS = 45
# Fixed tar metadata: identical inputs make identical layers (and cache hits) on any worker.
CONTEXT_MTIME = 315532800

MODEL_NAME = re.compile(MODEL_NAME_PATTERN)
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
IMAGE_ID = re.compile(r"^sha256:[0-9a-f]{64}$")
WHEEL_FILE = re.compile(r"^[A-Za-z0-9_.+-]{1,200}\.whl$")
LABEL_KEY = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,126}[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,254}$")
STEP_LINE = re.compile(r"^Step (\d+)/(\d+) : ")


class BuildError(Exception):
    """A build cannot go on; the message is the build's readable status reason."""


# --- the build context -------------------------------------------------------------------------


def wheelhouse_path() -> Path:
    """Where the dependency and runtime wheels are (see prepare_wheelhouse.py)."""
    return Path(settings.MODELDECK_WHEELHOUSE)


def _wheels(folder: Path) -> list[Path]:
    wheels = sorted(folder.glob("*.whl")) if folder.is_dir() else []
    for wheel in wheels:
        if not WHEEL_FILE.fullmatch(wheel.name) or not wheel.is_file():
            raise BuildError(f"Unexpected file in the wheelhouse: {wheel.name!r}.")
    return wheels


def wheelhouse_files(wheelhouse: Path | None = None) -> tuple[list[Path], Path]:
    """The dependency wheels and the one runtime wheel; BuildError when not prepared."""
    wheelhouse = wheelhouse or wheelhouse_path()
    dependencies = _wheels(wheelhouse / "deps")
    runtime = _wheels(wheelhouse / "runtime")
    if not dependencies or len(runtime) != 1:
        raise BuildError(
            f"The wheelhouse at {wheelhouse} is not prepared (need deps/*.whl and one "
            "runtime/*.whl): run deployments/targets/docker/prepare_wheelhouse.py."
        )
    return dependencies, runtime[0]


def _checked(pattern: re.Pattern, value: Any, what: str) -> str:
    text = str(value)
    if not pattern.fullmatch(text):
        raise BuildError(f"Refusing to build: {what} {text[:80]!r} is not well-formed.")
    return text


def image_labels(*, version: ModelVersion, build_id: int, sha256: str) -> dict[str, str]:
    """The image's labels: what it serves, never where (images are endpoint-agnostic)."""
    labels = {
        "org.opencontainers.image.title": "modeldeck-serving",
        "modeldeck.model": _checked(MODEL_NAME, version.model.name, "model name"),
        "modeldeck.model-version": str(int(version.number)),
        "modeldeck.version": str(int(version.pk)),
        "modeldeck.sha256": _checked(SHA256_HEX, sha256, "sha256"),
        "modeldeck.build": str(int(build_id)),
    }
    for key, value in labels.items():
        _checked(LABEL_KEY, key, "label key")
        _checked(LABEL_VALUE, value, "label value")
    return labels


def version_manifest(*, version: ModelVersion, sha256: str) -> bytes:
    """`model/modeldeck.json`: what the image serves, as data (never as instructions)."""
    document = {
        "model": version.model.name,
        "number": version.number,
        "version": version.reference,
        "version_id": version.pk,
        "sha256": sha256,
        "signature": version.signature or {},
    }
    return json.dumps(document, indent=2, sort_keys=True).encode()


def _tar_info(name: str, size: int = 0, *, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = CONTEXT_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if directory:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    else:
        info.size = size
        info.mode = 0o644
    return info


class _HashingReader:
    """Reads a stream while hashing it, so the model's sha256 is checked as it is packed."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        chunk = self.stream.read(size)
        self.digest.update(chunk)
        return chunk


@dataclass
class BuildContext:
    """A build context as one tar stream, with the list of what is in it."""

    fileobj: IO[bytes]
    members: list[str]
    size: int


def build_context(*, version: ModelVersion, wheelhouse: Path | None = None) -> BuildContext:
    """Pack exactly: Dockerfile, wheels/deps/*.whl, wheels/runtime/*.whl, model/model.onnx,
    model/modeldeck.json and (with a reference profile) model/reference.json."""
    dependencies, runtime_wheel = wheelhouse_files(wheelhouse)
    artifact = version.artifacts.filter(kind=ArtifactKind.MODEL).first()
    if artifact is None:
        raise BuildError(f"{version.reference} has no model file.")
    sha256 = _checked(SHA256_HEX, artifact.sha256, "sha256")
    spool = tempfile.SpooledTemporaryFile(max_size=CONTEXT_SPOOL_BYTES)  # noqa: SIM115
    members: list[str] = []
    with tarfile.open(fileobj=spool, mode="w", format=tarfile.PAX_FORMAT) as archive:

        def add_bytes(name: str, data: bytes) -> None:
            archive.addfile(_tar_info(name, len(data)), io.BytesIO(data))
            members.append(name)

        def add_directory(name: str) -> None:
            archive.addfile(_tar_info(name, directory=True))
            members.append(name + "/")

        add_bytes("Dockerfile", DOCKERFILE_TEMPLATE.read_bytes())
        for folder, wheels in (("wheels/deps", dependencies), ("wheels/runtime", [runtime_wheel])):
            add_directory(folder)
            for wheel in wheels:
                with open(wheel, "rb") as stream:
                    archive.addfile(
                        _tar_info(f"{folder}/{wheel.name}", wheel.stat().st_size), stream
                    )
                members.append(f"{folder}/{wheel.name}")
        # The model comes last in the Dockerfile; its place in the tar does not matter.
        add_directory("model")
        with artifact_storage().open(artifact.storage_key, "rb") as stream:
            reader = _HashingReader(stream)
            try:
                archive.addfile(_tar_info("model/model.onnx", artifact.size), reader)
            except (OSError, EOFError) as error:
                raise BuildError(f"Could not read the model file: {error}") from None
        members.append("model/model.onnx")
        if reader.digest.hexdigest() != sha256:
            raise BuildError(
                f"The stored model file of {version.reference} does not match its sha256."
            )
        add_bytes("model/modeldeck.json", version_manifest(version=version, sha256=sha256))
        if version.reference_profile:
            add_bytes("model/reference.json", json.dumps(version.reference_profile).encode())
        if smoke := smoke_file_bytes(version.smoke_input):
            add_bytes(f"model/{SMOKE_FILE}", smoke)
    size = spool.tell()
    spool.seek(0)
    return BuildContext(fileobj=spool, members=members, size=size)


# --- where a target builds ---------------------------------------------------------------------


def build_settings(target: Target) -> DockerSettings:
    """The engine and registry a target's images are built with: a Docker target's own
    settings, or a Kubernetes target's `build` setting (DriverError when it has none)."""
    if target.kind == TargetKind.KUBERNETES:
        from deployments.targets.kubernetes.config import kubernetes_settings

        values = kubernetes_settings(target.config).build
        if values is None:
            raise DriverError(
                f"Kubernetes target {target.name} has no build setting: give it "
                '"build": {"registry": {"repository": …}} so deploys build and push the '
                "serving images its cluster pulls."
            )
        return values
    return docker_settings(target.config)


def build_repository(config: DockerSettings) -> str:
    """The repository a target's builds are pushed to ("": kept on the engine)."""
    return config.registry["repository"] if config.registry else ""


# --- running a build ---------------------------------------------------------------------------


def local_tag(build: Build) -> str:
    """The engine-local tag of a build's image: ids only (and the installation's, so two
    installations sharing an engine never move each other's tags)."""
    return (
        f"{LOCAL_REPOSITORY}:version-{int(build.version_id)}-build-{int(build.pk)}"
        f"-{installation_id()}"
    )


def is_pushed(build: Build) -> bool:
    """Whether the build's image lives in a registry (then it is deployed as repo@digest)."""
    return bool(build.image) and not build.image.startswith(f"{LOCAL_REPOSITORY}:")


def deploy_reference(build: Build) -> str:
    """What a container is started from: the image id, or repo@digest for a pushed image."""
    if is_pushed(build):
        repository = build.image.rsplit(":", 1)[0]
        return f"{repository}@{build.digest}"
    return build.digest


def build_stale_seconds() -> float:
    """How long a running build may go without a heartbeat before its worker counts as lost."""
    return float(settings.DEPLOYMENTS_BUILD_STALE_SECONDS)


class _Heartbeat(threading.Thread):
    """Touches a running build's `updated_at` while its worker lives; a SIGKILLed worker stops
    touching it, and the next reconcile replaces the build instead of waiting on it."""

    def __init__(self, build_id: int) -> None:
        super().__init__(name=f"build-{build_id}-heartbeat", daemon=True)
        self.build_id = build_id
        self.stopped = threading.Event()

    def run(self) -> None:
        interval = max(0.5, build_stale_seconds() / HEARTBEATS_PER_STALE_PERIOD)
        try:
            while not self.stopped.wait(interval):
                try:
                    Build.objects.filter(pk=self.build_id, status=BuildStatus.RUNNING).update(
                        updated_at=timezone.now()
                    )
                except DatabaseError:  # the next beat tries again; the build goes on
                    logger.warning("heartbeat of build %s failed", self.build_id, exc_info=True)
                    connection.close()
        finally:
            connection.close()  # this thread's own connection

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)


def _bounded(log: str) -> str:
    if len(log) <= LOG_LIMIT_CHARACTERS:
        return log
    keep = log[-(LOG_LIMIT_CHARACTERS - 200) :]
    return "[… earlier build output dropped …]\n" + keep[keep.find("\n") + 1 :]


class _BuildRecorder:
    """Streams engine output into the Build row: progress by steps, a bounded log."""

    def __init__(self, build: Build) -> None:
        self.build = build
        self.log = ""
        self.progress = 0
        self.saved_at = 0.0

    def line(self, text: str, *, progress: int | None = None, force: bool = False) -> None:
        if text:
            self.log = _bounded(self.log + text + ("" if text.endswith("\n") else "\n"))
        if progress is not None:
            self.progress = max(self.progress, min(99, progress))
        if force or progress is not None or time.monotonic() - self.saved_at > 1.0:
            self.save()

    def save(self, **fields) -> int:
        self.saved_at = time.monotonic()
        return Build.objects.filter(pk=self.build.pk, status=BuildStatus.RUNNING).update(
            progress=self.progress, log=self.log, updated_at=timezone.now(), **fields
        )


def _run_engine_build(
    recorder: _BuildRecorder,
    *,
    client,
    context: BuildContext,
    tag: str,
    labels: dict,
    base_image: str,
) -> str:
    """Build on the engine; returns the image id."""
    image_id = ""
    stream = client.api.build(
        fileobj=context.fileobj,
        custom_context=True,
        tag=tag,
        rm=True,
        forcerm=True,
        pull=False,
        network_mode="none",
        labels=labels,
        buildargs={"BASE_IMAGE": base_image},
        container_limits={"memory": BUILD_MEMORY_BYTES, "memswap": BUILD_MEMORY_BYTES},
        timeout=BUILD_HTTP_TIMEOUT_SECONDS,
        decode=True,
    )
    for chunk in stream:
        if "error" in chunk:
            detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
            recorder.line(f"ERROR: {detail}", force=True)
            raise BuildError(f"The engine failed the build: {str(detail).strip()[:500]}")
        text = chunk.get("stream", "")
        step = STEP_LINE.match(text)
        progress = None
        if step:
            done, total = int(step.group(1)), int(step.group(2))
            progress = 5 + (done - 1) * 85 // max(total, 1)
        if text:
            recorder.line(text.rstrip("\n"), progress=progress)
            if step and step.group(1) == "1":
                _checkpoint("image-building")
        elif chunk.get("status"):
            recorder.line(str(chunk["status"]))
        aux = chunk.get("aux")
        if isinstance(aux, dict) and IMAGE_ID.fullmatch(str(aux.get("ID", ""))):
            image_id = aux["ID"]
    if not image_id:
        image_id = client.api.inspect_image(tag)["Id"]
    return image_id


def _registry_auth(registry: dict) -> dict | None:
    username_env, password_env = registry.get("username_env"), registry.get("password_env")
    if not username_env:
        return None
    # Checked again where used: a row written before the rule must not read other variables.
    try:
        credential_environment(username_env)
        credential_environment(password_env or "")
    except CredentialError as error:
        raise BuildError(f"Registry credentials: the variable {error}") from None
    username, password = os.environ.get(username_env), os.environ.get(password_env or "")
    if not username or not password:
        raise BuildError(
            f"Registry credentials are missing: set {username_env} and {password_env} in the "
            "worker's environment."
        )
    return {"username": username, "password": password}


def _push(recorder: _BuildRecorder, *, client, image_id: str, registry: dict, tag: str) -> str:
    """Tag and push the image; returns the registry's manifest digest."""
    repository = registry["repository"]
    client.api.tag(image_id, repository, tag)
    recorder.line(f"Pushing {repository}:{tag}", progress=92, force=True)
    digest = ""
    layers: dict[str, str] = {}
    for chunk in client.api.push(
        repository, tag=tag, stream=True, decode=True, auth_config=_registry_auth(registry)
    ):
        if "error" in chunk:
            detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
            recorder.line(f"ERROR: {detail}", force=True)
            raise BuildError(f"The registry refused the push: {str(detail).strip()[:500]}")
        status, layer = str(chunk.get("status", "")), str(chunk.get("id", ""))
        # One log line per layer and state, not one per progress tick.
        if layer and status and layers.get(layer) != status and status != "Pushing":
            layers[layer] = status
            done = sum(1 for state in layers.values() if state != "Preparing")
            recorder.line(f"{layer}: {status}", progress=92 + 6 * done // max(len(layers), 1))
        aux = chunk.get("aux")
        if isinstance(aux, dict) and IMAGE_ID.fullmatch(str(aux.get("Digest", ""))):
            digest = aux["Digest"]
        match = re.search(r"digest: (sha256:[0-9a-f]{64})", str(chunk.get("status", "")))
        if match:
            digest = match.group(1)
    if not digest:
        raise BuildError("The registry did not report a digest for the pushed image.")
    recorder.line(f"Pushed {repository}@{digest}", force=True)
    return digest


def _checkpoint(step: str) -> None:
    """The reconciler's fault hook (tests hold a worker mid-build with it)."""
    from deployments.reconciler import _checkpoint as checkpoint

    checkpoint(step)


def _event(build: Build, message: str, *, level: str = EventLevel.INFO, **data) -> None:
    from deployments.services import deployment_event_record

    deployment_event_record(build=build, message=message, level=level, data=data)


def build_version_image(build_id: int) -> None:
    """Run one pending build (the body of the Celery task of the same name); safe to run twice:
    only the run that moves the row from pending to running builds."""
    build = Build.objects.select_related("version__model", "target").filter(pk=build_id).first()
    if build is None or build.status != BuildStatus.PENDING:
        return
    now = timezone.now()
    claimed = Build.objects.filter(pk=build_id, status=BuildStatus.PENDING).update(
        status=BuildStatus.RUNNING, started_at=now, updated_at=now, progress=0, log=""
    )
    if not claimed:
        return
    build.status = BuildStatus.RUNNING
    heartbeat = _Heartbeat(build.pk)
    heartbeat.start()
    try:
        _build_claimed(build)
    finally:
        heartbeat.stop()


def _build_claimed(build: Build) -> None:
    recorder = _BuildRecorder(build)
    started = time.monotonic()
    _event(build, f"Building the serving image of {build.version.reference}.")
    try:
        config = build_settings(build.target)
        if build_repository(config) != build.repository:
            raise BuildError(
                f"The target {build.target.name} no longer pushes to "
                f"{build.repository or 'its own engine only'}; a newer deploy builds again."
            )
        _checked(IMAGE_REFERENCE, build.base_image, "base image")
        client = docker_client(config)
        recorder.line("Packing the build context.", progress=1, force=True)
        context = build_context(version=build.version)
        labels = image_labels(
            version=build.version, build_id=build.pk, sha256=_model_sha256(build.version)
        )
        recorder.line(
            f"Context: {len(context.members)} entries, {context.size / 1e6:.1f} MB.", progress=3
        )
        try:
            tag = local_tag(build)
            image_id = _run_engine_build(
                recorder,
                client=client,
                context=context,
                tag=tag,
                labels=labels,
                base_image=build.base_image,
            )
            image, digest = tag, image_id
            if config.registry:
                push_tag = tag.split(":", 1)[1]
                digest = _push(
                    recorder,
                    client=client,
                    image_id=image_id,
                    registry=config.registry,
                    tag=push_tag,
                )
                image = f"{config.registry['repository']}:{push_tag}"
        finally:
            context.fileobj.close()
    except (BuildError, DriverError) as error:
        _finish_failed(build, recorder, str(error))
        return
    except docker_errors() as error:
        _finish_failed(build, recorder, f"The Docker engine failed: {error}")
        return
    except Exception as error:  # a bug must still leave the row terminal, not running forever
        logger.exception("build %s failed", build.pk)
        _finish_failed(build, recorder, f"Unexpected error: {error.__class__.__name__}: {error}")
        raise
    seconds = time.monotonic() - started
    recorder.line(f"Built {image} ({digest}) in {seconds:.1f} s.")
    recorder.progress = 100
    recorder.save(
        status=BuildStatus.SUCCEEDED, image=image, digest=digest, finished_at=timezone.now()
    )
    _event(
        build,
        f"Built the serving image of {build.version.reference} in {seconds:.1f} s.",
        image=image,
        digest=digest,
    )


def _finish_failed(build: Build, recorder: _BuildRecorder, reason: str) -> None:
    recorder.line(f"FAILED: {reason}")
    recorder.save(
        status=BuildStatus.FAILED, status_reason=reason[:2000], finished_at=timezone.now()
    )
    _event(
        build,
        f"The image build of {build.version.reference} failed: {reason}",
        level=EventLevel.ERROR,
    )


def _model_sha256(version: ModelVersion) -> str:
    artifact = version.artifacts.filter(kind=ArtifactKind.MODEL).first()
    if artifact is None:
        raise BuildError(f"{version.reference} has no model file.")
    return artifact.sha256


# --- which build serves a version --------------------------------------------------------------


def _builds_for(*, version: ModelVersion, target: Target, config: DockerSettings):
    builds = Build.objects.filter(version=version, base_image=config.base_image)
    if config.registry:
        # A pushed image serves every target that pulls from the same repository.
        return builds.filter(repository=build_repository(config))
    return builds.filter(target=target, repository="")


def image_exists(client, build: Build) -> bool:
    """Whether the engine still has the build's image (a pushed one can be pulled again)."""
    if is_pushed(build):
        return True
    try:
        client.api.inspect_image(build.digest)
    except docker_errors(not_found_only=True):
        return False
    return True


def build_request(*, version: ModelVersion, target: Target) -> Build:
    """The build that will serve `version` on `target`: a usable succeeded one, one in flight,
    a recently failed one (not retried yet), or a new pending one. Idempotent."""
    config = build_settings(target)
    builds = _builds_for(version=version, target=target, config=config)
    now = timezone.now()
    silent = builds.filter(
        status=BuildStatus.RUNNING, updated_at__lt=now - timedelta(seconds=build_stale_seconds())
    )
    lost = set(silent.values_list("pk", flat=True))
    Build.objects.filter(pk__in=lost, status=BuildStatus.RUNNING).update(
        status=BuildStatus.FAILED,
        finished_at=F("updated_at"),
        updated_at=now,
        status_reason="The build stopped making progress (its worker was lost).",
    )
    latest = builds.order_by("-created_at", "-pk").first()
    if latest is not None:
        if latest.status in (BuildStatus.PENDING, BuildStatus.RUNNING):
            return latest
        # A lost build is no verdict on the version: it is replaced at once, not held back.
        if (
            latest.pk not in lost
            and latest.status == BuildStatus.FAILED
            and latest.finished_at
            and (latest.finished_at > now - timedelta(seconds=FAILED_BUILD_RETRY_SECONDS))
        ):
            return latest
    for succeeded in builds.filter(status=BuildStatus.SUCCEEDED).order_by("-created_at", "-pk"):
        # A pushed image needs no engine to be reused (a worker may reach only the cluster).
        if is_pushed(succeeded) or image_exists(docker_client(config), succeeded):
            return succeeded
    try:
        with transaction.atomic():
            return Build.objects.create(
                version=version,
                target=target,
                base_image=config.base_image,
                repository=build_repository(config),
                platform=DEFAULT_PLATFORM,
            )
    except IntegrityError:
        # Another reconcile just asked for the same pushed image: share its build.
        shared = builds.exclude(status=BuildStatus.FAILED).order_by("-created_at", "-pk").first()
        return shared or builds.order_by("-created_at", "-pk").first()


def ensure_version_image(*, version: ModelVersion, target: Target) -> Build:
    """A succeeded build for `version` on `target`, building it here when nobody else is.

    Waits (bounded) for a build another worker runs; DriverError when the build failed.
    """
    build = build_request(version=version, target=target)
    if build.status == BuildStatus.PENDING:
        build_version_image(build.pk)
    deadline = time.monotonic() + BUILD_WAIT_SECONDS
    build.refresh_from_db()
    while build.status in (BuildStatus.PENDING, BuildStatus.RUNNING):
        if time.monotonic() > deadline:
            raise DriverError(
                f"The serving image of {version.reference} is still being built (build "
                f"{build.pk}, {build.progress} %); the next reconcile picks it up."
            )
        time.sleep(0.5)
        # Asked again rather than re-read: a build whose worker died meanwhile is replaced.
        build = build_request(version=version, target=target)
        if build.status == BuildStatus.PENDING:
            build_version_image(build.pk)
            build.refresh_from_db()
    if build.status != BuildStatus.SUCCEEDED:
        raise DriverError(
            f"The image build {build.pk} of {version.reference} failed: {build.status_reason}"
        )
    return build
