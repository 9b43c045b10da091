"""A release's Kubernetes objects from the database, and the YAML bundle for GitOps.

`export_manifests(release)` renders exactly the objects the driver applies for that release
(same builders, same inputs), so a bundle committed to a GitOps repository (Argo CD, Flux) and
the driver converge on the same cluster state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import yaml
from django.db.models import F

from deployments.access import endpoint_access_document
from deployments.targets.base import DriverError, installation_id
from deployments.targets.kubernetes.config import (
    IMAGE_BY_DIGEST,
    KubernetesSettings,
    kubernetes_settings,
)
from deployments.targets.kubernetes.manifests import (
    EndpointIdentity,
    ServingVersion,
    release_manifests,
)

if TYPE_CHECKING:
    from deployments.models import Build, Endpoint, Release, Target


class _BundleDumper(yaml.SafeDumper):
    """Plain YAML: objects that share a dict are written out in full, never as aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def image_by_digest(build: Build) -> str:
    """`repository@sha256:…` of a build's image: the tag (if any) dropped, the digest pinned."""
    image, digest = build.image.strip(), build.digest.strip()
    if not image:
        raise DriverError(
            f"Build {build.pk} of {build.version.reference} recorded no image repository; "
            "Kubernetes pulls images from a registry."
        )
    repository = image.split("@", 1)[0]
    last = repository.rsplit("/", 1)[-1]
    if ":" in last:  # a tag, not a registry port
        repository = repository[: -(len(last) - last.index(":"))]
    reference = f"{repository}@{digest}"
    if not IMAGE_BY_DIGEST.match(reference) or len(reference) > 500:
        raise DriverError(
            f"Build {build.pk} of {build.version.reference} has no usable image digest "
            f"({reference[:120]!r})."
        )
    return reference


def serving_versions(*, target: Target, version_ids: Iterable[int]) -> dict[int, ServingVersion]:
    """Each version with the image of its newest succeeded build pushed to the repository this
    target's cluster pulls from (whichever target's deploy built it)."""
    from deployments.models import Build, BuildStatus
    from registry.models import Artifact, ArtifactKind, ModelVersion

    build_config = kubernetes_settings(target.config).build
    if build_config is None or not build_config.registry:
        raise DriverError(
            f"Kubernetes target {target.name} has no build setting: give it "
            '"build": {"registry": {"repository": …}} so deploys build and push the serving '
            "images its cluster pulls."
        )
    ids = sorted({int(version_id) for version_id in version_ids})
    versions = ModelVersion.objects.select_related("model").in_bulk(ids)
    builds: dict[int, Build] = {}
    succeeded = (
        Build.objects.select_related("version__model")
        .filter(
            repository=build_config.registry["repository"],
            base_image=build_config.base_image,
            version_id__in=ids,
            status=BuildStatus.SUCCEEDED,
        )
        .exclude(digest="")
        .order_by(F("finished_at").desc(nulls_last=True), "-pk")
    )
    for build in succeeded:
        builds.setdefault(build.version_id, build)
    sha256 = dict(
        Artifact.objects.filter(version_id__in=ids, kind=ArtifactKind.MODEL).values_list(
            "version_id", "sha256"
        )
    )
    result = {}
    for version_id in ids:
        version = versions.get(version_id)
        if version is None:
            raise DriverError(f"Version {version_id} no longer exists.")
        build = builds.get(version_id)
        if build is None:
            raise DriverError(
                f"{version.reference} has no succeeded image build for target {target.name} "
                f"(registry {build_config.registry['repository']}); deploy it to build and "
                "push its serving image."
            )
        result[version_id] = ServingVersion(
            version_id=version_id,
            reference=version.reference,
            model_name=version.model.name,
            number=version.number,
            sha256=sha256.get(version_id, ""),
            image=image_by_digest(build),
        )
    return result


def gateway_image_for(
    settings: KubernetesSettings,
    variants: Sequence[Mapping[str, Any]],
    versions: Mapping[int, ServingVersion],
) -> str:
    """The image the gateway runs: the configured one, else the first variant's serving image
    (every serving image carries the whole runtime, gateway included)."""
    if settings.gateway_image:
        return settings.gateway_image
    if not variants:
        raise DriverError("The release serves no version, so there is no image for a gateway.")
    return versions[int(variants[0]["version_id"])].image


def endpoint_identity(endpoint: Endpoint) -> EndpointIdentity:
    """What names and labels the endpoint's objects on its target."""
    return EndpointIdentity(
        endpoint_id=endpoint.pk,
        name=endpoint.name,
        target_id=endpoint.target_id,
        installation=installation_id(),
    )


def release_objects(release: Release) -> list[dict[str, Any]]:
    """Every object the driver applies for this release (none for a stop release)."""
    endpoint = release.endpoint
    target = endpoint.target
    if target.kind != "kubernetes":
        raise DriverError("Manifests exist only for releases on Kubernetes targets.")
    if release.is_stop:
        return []
    settings = kubernetes_settings(target.config)
    variants = release.variants
    versions = serving_versions(
        target=target, version_ids=[variant["version_id"] for variant in variants]
    )
    # The reconciler fences route tables with the endpoint generation, which every release write
    # bumps together with the release number; an older release is rendered with its own number.
    generation = (
        endpoint.generation if endpoint.desired_release_id == release.pk else release.number
    )
    return release_manifests(
        endpoint=endpoint_identity(endpoint),
        variants=variants,
        versions=versions,
        release_number=release.number,
        replicas=release.replicas,
        generation=generation,
        sticky=release.sticky,
        token=endpoint.gateway_token,
        gateway_image=gateway_image_for(settings, variants, versions),
        settings=settings,
        access=endpoint_access_document(endpoint),
    )


def export_manifests(release: Release) -> str:
    """The release's objects as one multi-document YAML bundle, for a GitOps repository."""
    objects = release_objects(release)
    endpoint = release.endpoint
    settings = kubernetes_settings(endpoint.target.config)
    lines = [
        f"# Modeldeck endpoint {endpoint.name}, release {release.number} ({release.reason}),",
        f"# target {endpoint.target.name}, namespace {settings.namespace}.",
        "# Apply with server-side apply (kubectl apply --server-side --field-manager=modeldeck)",
        "# or commit to a GitOps repository. The Secret holds the gateway's admin token.",
    ]
    if not objects:
        lines.append("# This release stops the endpoint: it has no objects.")
        return "\n".join(lines) + "\n"
    bundle = yaml.dump_all(
        objects,
        Dumper=_BundleDumper,
        explicit_start=True,
        sort_keys=False,
        default_flow_style=False,
        width=4096,
    )
    return "\n".join(lines) + "\n" + bundle
