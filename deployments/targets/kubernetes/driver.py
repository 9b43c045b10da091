"""Kubernetes targets: version servers and the gateway as Deployments, applied server-side.

Everything is applied with server-side apply (`fieldManager=modeldeck`, forced) from the pure
builders in `deployments.targets.kubernetes.manifests`, so what the driver applies and what
`export_manifests` renders for GitOps are the same objects. Readiness is the Deployment's rollout
status, as `kubectl rollout status` reads it.

The route table lives in a ConfigMap whose annotation holds its generation (the fence against
stale reconcile runs). The gateway reads it once at start, so the gateway pod template carries
the table's sha256 and a new table rolls the gateway; `set_routes` returns once every gateway pod
serves the new table. With `traffic: gateway-api` an HTTPRoute carries the weights instead and
`set_routes` waits until its Gateway accepted the new generation.

Objects are found by labels (managed-by, installation, target, endpoint id, component, version
id); servers no longer wanted are deleted by label selector.

Images: a server's version is first built and pushed to the target's `build.registry` (by
`deployments.targets.docker.images`, on the worker's engine or `build.docker_host`), unless a
build for that version and repository already succeeded; the manifests pin `repository@sha256:…`.
Scale: a version's replicas go into its Deployment, or a HorizontalPodAutoscaler owns them; a
version that may run several pods gets a PodDisruptionBudget; ServerState reports ready/desired
replicas.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from django.conf import settings

from common.errors import ApplicationError
from deployments.access import endpoint_access_document
from deployments.targets.base import (
    DriverError,
    GatewayState,
    Observation,
    OwnedResource,
    ResourceRole,
    Route,
    ServerSpec,
    ServerState,
    StaleGeneration,
    TargetDriver,
    installation_id,
)
from deployments.targets.kubernetes.client import KubernetesApi, KubernetesApiError, api_client_for
from deployments.targets.kubernetes.config import ConfigError, kubernetes_settings
from deployments.targets.kubernetes.export import (
    endpoint_identity,
    gateway_image_for,
    serving_versions,
)
from deployments.targets.kubernetes.manifests import (
    ANNOTATION_MODEL_VERSION,
    ANNOTATION_ROUTES_GENERATION,
    COMPONENT_GATEWAY,
    COMPONENT_SERVER,
    GATEWAY_PORT,
    LABEL_COMPONENT,
    LABEL_ENDPOINT_ID,
    LABEL_RELEASE,
    LABEL_VERSION,
    SCALING_KINDS,
    SERVER_PORT,
    EndpointIdentity,
    declared_generation,
    gateway_deployment,
    gateway_name,
    gateway_service,
    gateway_token_secret,
    http_route,
    http_route_name,
    owner_selector,
    routes_config_map,
    routes_document,
    routes_name,
    scaling_manifests,
    server_manifests,
)
from deployments.targets.policy import check_kubernetes_settings

if TYPE_CHECKING:
    from deployments.models import Endpoint, Target

POLL_SECONDS = 0.25
SERVER_KINDS = ("Deployment", "Service", *SCALING_KINDS)
GATEWAY_KINDS = ("Deployment", "Service", "ConfigMap", "Secret")


def _labels(manifest: dict[str, Any]) -> dict[str, str]:
    return (manifest.get("metadata") or {}).get("labels") or {}


def _number(text: Any) -> int | None:
    return int(text) if isinstance(text, str) and text.isdigit() else None


def rollout_status(deployment: dict[str, Any]) -> tuple[bool, bool, str]:
    """(complete, failed, detail) of a Deployment, read the way `kubectl rollout status` does."""
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    wanted = int(spec.get("replicas", 1))
    for condition in status.get("conditions") or []:
        kind, state = condition.get("type"), condition.get("status")
        if (kind == "Progressing" and state == "False") or (
            kind == "ReplicaFailure" and state == "True"
        ):
            reason = condition.get("reason", "")
            return False, True, f"{reason}: {condition.get('message', '')}"[:500]
    generation = int((deployment.get("metadata") or {}).get("generation") or 0)
    if int(status.get("observedGeneration") or 0) < generation:
        return False, False, "waiting for the Deployment controller"
    updated = int(status.get("updatedReplicas") or 0)
    current = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    ready = int(status.get("readyReplicas") or 0)
    if updated < wanted:
        return False, False, f"{updated} of {wanted} pods updated"
    if current > updated:
        return False, False, f"{current - updated} old pods are terminating"
    # Every replica, not just the rollout: a version scaled to N serves with N.
    if ready < wanted:
        return False, False, f"{ready} of {wanted} replicas ready"
    if available < updated:
        return False, False, f"{available} of {updated} updated pods are available"
    return True, False, ""


def replica_counts(deployment: dict[str, Any]) -> tuple[int, int]:
    """(ready, desired) replicas of a Deployment (desired as its spec or autoscaler set it)."""
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    return int(status.get("readyReplicas") or 0), int(spec.get("replicas", 1))


class KubernetesDriver(TargetDriver):
    """Deployments and Services in one namespace, by server-side apply and label selectors."""

    kind = "kubernetes"

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        self.settings = kubernetes_settings(target.config)
        self._api: KubernetesApi | None = None

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """See deployments/targets/kubernetes/config.py for the settings; bad values are refused."""
        try:
            values = kubernetes_settings(config)
        except ConfigError as error:
            raise ApplicationError(str(error), {"config": error.key}) from None
        # Credentials are named, never implied: without a kubeconfig the client would fall back
        # to the worker's own (~/.kube/config), and in-cluster means the worker pod's identity.
        if values.in_cluster and not settings.TARGET_ALLOW_IN_CLUSTER:
            raise ApplicationError(
                "Kubernetes target setting in_cluster: this installation does not let targets "
                "use the workers' own service account (TARGET_ALLOW_IN_CLUSTER).",
                {"config": "in_cluster"},
            )
        if not (values.in_cluster or values.kubeconfig or values.kubeconfig_env):
            raise ApplicationError(
                "Kubernetes target settings need kubeconfig (a file in TARGET_CREDENTIALS_DIR) "
                "or kubeconfig_env (a MODELDECK_TARGET_ variable holding its path).",
                {"config": "kubeconfig"},
            )
        # As for Docker targets: which engines workers build on is the operator's call.
        build = values.build
        if build and build.docker_host and build.docker_host not in settings.TARGET_DOCKER_HOSTS:
            raise ApplicationError(
                f"Kubernetes target setting build: docker_host {build.docker_host} is not one of "
                "the engines this installation allows (TARGET_DOCKER_HOSTS); leave it out to "
                "build on the workers' own engine.",
                {"config": "build"},
            )
        check_kubernetes_settings(values)
        return dict(config)

    @classmethod
    def credential_references(cls, config: dict[str, Any]) -> list[tuple[str, str, str]]:
        references = []
        if config.get("kubeconfig"):
            references.append(("kubeconfig", "file", config["kubeconfig"]))
        if config.get("kubeconfig_env"):
            references.append(("kubeconfig_env", "variable", config["kubeconfig_env"]))
        build = config.get("build") or {}
        references += [
            ("build", "file", build[key])
            for key in ("tls_ca_cert", "tls_client_cert", "tls_client_key")
            if build.get(key)
        ]
        registry = build.get("registry") or {}
        references += [
            ("build", "variable", registry[key])
            for key in ("username_env", "password_env")
            if registry.get(key)
        ]
        return references

    @property
    def api(self) -> KubernetesApi:
        if self._api is None:
            self._api = KubernetesApi(api_client_for(self.settings), self.settings.namespace)
        return self._api

    # --- identity ---

    def _owner(self, endpoint_id: int | None = None) -> dict[str, str]:
        return owner_selector(
            installation=installation_id(), target_id=self.target.pk, endpoint_id=endpoint_id
        )

    def _identity(self, endpoint: Endpoint) -> EndpointIdentity:
        return endpoint_identity(endpoint)

    @staticmethod
    def _release_number(endpoint: Endpoint) -> int:
        release = endpoint.desired_release or endpoint.live_release
        return release.number if release is not None else 0

    def _public_url(self, endpoint_name: str) -> str:
        if self.settings.public_url:
            return self.settings.public_url.replace("{endpoint}", endpoint_name)
        if self.settings.uses_gateway_api:
            hostname = self.settings.hostname_for(endpoint_name)
            return f"http://{hostname}" if hostname else ""
        return f"http://{gateway_name(endpoint_name)}.{self.settings.namespace}.svc:{GATEWAY_PORT}"

    # --- observation ---

    def _server_state(self, endpoint_id: int, deployment: dict[str, Any]) -> ServerState:
        metadata = deployment.get("metadata") or {}
        labels = metadata.get("labels") or {}
        annotations = metadata.get("annotations") or {}
        complete, failed, detail = rollout_status(deployment)
        alive = not metadata.get("deletionTimestamp") and not failed
        name = metadata["name"]
        ready_replicas, desired_replicas = replica_counts(deployment)
        return ServerState(
            endpoint_id=endpoint_id,
            version_id=_number(labels.get(LABEL_VERSION)) or 0,
            version=annotations.get(ANNOTATION_MODEL_VERSION, ""),
            release_number=_number(labels.get(LABEL_RELEASE)) or 0,
            handle=name,
            upstream=f"http://{name}.{self.settings.namespace}.svc:{SERVER_PORT}",
            alive=alive,
            ready=alive and complete,
            ready_replicas=ready_replicas,
            desired_replicas=desired_replicas,
            detail=detail,
        )

    def _gateway_state(self, endpoint: Endpoint, deployment: dict[str, Any]) -> GatewayState:
        metadata = deployment.get("metadata") or {}
        template = ((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}
        complete, failed, detail = rollout_status(deployment)
        alive = not metadata.get("deletionTimestamp") and not failed
        held = _number((template.get("annotations") or {}).get(ANNOTATION_ROUTES_GENERATION))
        name = metadata["name"]
        return GatewayState(
            endpoint_id=endpoint.pk,
            handle=name,
            url=self._public_url(endpoint.name),
            admin_url=f"http://{name}.{self.settings.namespace}.svc:{GATEWAY_PORT}",
            alive=alive,
            ready=alive and complete,
            # Only a finished rollout means every gateway pod serves the table.
            generation=held if complete else None,
            detail=detail,
        )

    def _route_acceptance(self, route: dict[str, Any]) -> tuple[bool, bool, str]:
        """(accepted at the current generation, refused, detail) from the HTTPRoute status."""
        generation = int((route.get("metadata") or {}).get("generation") or 0)
        parent = self.settings.parent
        parents = [
            status
            for status in ((route.get("status") or {}).get("parents") or [])
            if parent is not None and (status.get("parentRef") or {}).get("name") == parent.name
        ]
        if not parents:
            return False, False, "no Gateway controller has reported on the HTTPRoute yet"
        for status in parents:
            conditions = {c.get("type"): c for c in status.get("conditions") or []}
            accepted = conditions.get("Accepted")
            if accepted is None:
                return False, False, "the Gateway has not accepted the HTTPRoute yet"
            if accepted.get("status") == "False":
                return False, True, f"refused: {accepted.get('message', '')}"[:500]
            if int(accepted.get("observedGeneration") or 0) < generation:
                return False, False, "the Gateway has not seen the newest HTTPRoute yet"
            resolved = conditions.get("ResolvedRefs")
            if resolved is not None and resolved.get("status") == "False":
                return False, True, f"unresolved backends: {resolved.get('message', '')}"[:500]
        return True, False, ""

    def _route_state(self, endpoint: Endpoint, route: dict[str, Any]) -> GatewayState:
        metadata = route.get("metadata") or {}
        accepted, refused, detail = self._route_acceptance(route)
        alive = not metadata.get("deletionTimestamp")
        return GatewayState(
            endpoint_id=endpoint.pk,
            handle=metadata["name"],
            url=self._public_url(endpoint.name),
            admin_url="",
            alive=alive,
            # An HTTPRoute takes a new table at any time; only a refusal makes it unusable.
            ready=alive and not refused,
            generation=declared_generation(route) if accepted else None,
            detail=detail,
        )

    def observe(self, *, endpoint: Endpoint) -> Observation:
        servers = []
        gateway = None
        for deployment in self.api.list("Deployment", self._owner(endpoint.pk)):
            component = _labels(deployment).get(LABEL_COMPONENT)
            if component == COMPONENT_SERVER:
                servers.append(self._server_state(endpoint.pk, deployment))
            elif component == COMPONENT_GATEWAY and not self.settings.uses_gateway_api:
                gateway = self._gateway_state(endpoint, deployment)
        if self.settings.uses_gateway_api:
            route = self.api.get("HTTPRoute", http_route_name(endpoint.name))
            if route is not None and self._owns(route, endpoint.pk):
                gateway = self._route_state(endpoint, route)
        servers.sort(key=lambda server: server.version_id)
        return Observation(servers=servers, gateway=gateway)

    def _owns(self, manifest: dict[str, Any], endpoint_id: int) -> bool:
        labels = _labels(manifest)
        return all(labels.get(key) == value for key, value in self._owner(endpoint_id).items())

    # --- images ---

    def _serving(self, version_ids: list[int]):
        """The versions with their pushed images, building and pushing them here if needed
        (a deploy of a version already pushed to this registry reuses its build)."""
        from deployments.targets.docker.images import BuildError, ensure_version_image
        from registry.models import ModelVersion

        for version_id in version_ids:
            version = ModelVersion.objects.select_related("model").filter(pk=version_id).first()
            if version is None:
                raise DriverError(f"Version {version_id} no longer exists.")
            try:
                ensure_version_image(version=version, target=self.target)
            except BuildError as error:
                raise DriverError(str(error)) from None
        return serving_versions(target=self.target, version_ids=version_ids)

    # --- servers ---

    def ensure_server(self, *, endpoint: Endpoint, spec: ServerSpec) -> ServerState:
        version = self._serving([spec.version_id])
        scale = {
            "endpoint": self._identity(endpoint),
            "version": version[spec.version_id],
            "role": spec.role,
            "release_number": spec.release_number,
            "replicas": spec.replicas,
            "autoscale": spec.autoscale,
            "settings": self.settings,
        }
        service, deployment = server_manifests(**scale)
        scaling = scaling_manifests(**scale)
        self.api.apply(service)
        applied = self.api.apply(deployment)
        for manifest in scaling:
            self.api.apply(manifest)
        # A version scaled back to one fixed pod loses its autoscaler and disruption budget.
        wanted = {manifest["kind"] for manifest in scaling}
        for kind in SCALING_KINDS:
            if kind not in wanted:
                self.api.delete(kind, deployment["metadata"]["name"])
        return self._server_state(endpoint.pk, applied)

    def remove_server(self, *, server: ServerState) -> None:
        self._remove(COMPONENT_SERVER, endpoint_id=server.endpoint_id, version_id=server.version_id)

    # --- the gateway ---

    def _gateway_image(self, endpoint: Endpoint) -> str:
        if self.settings.gateway_image:
            return self.settings.gateway_image
        release = endpoint.desired_release or endpoint.live_release
        variants = release.variants if release is not None else []
        ids = [variant["version_id"] for variant in variants[:1]]
        versions = self._serving(ids)
        return gateway_image_for(self.settings, variants, versions)

    def ensure_gateway(self, *, endpoint: Endpoint) -> GatewayState:
        identity = self._identity(endpoint)
        release_number = self._release_number(endpoint)
        if self.settings.uses_gateway_api:
            route = self.api.get("HTTPRoute", http_route_name(endpoint.name))
            if route is None or not self._owns(route, endpoint.pk):
                empty = http_route(
                    endpoint=identity,
                    release_number=release_number,
                    routes=[],
                    generation=0,
                    sticky=None,
                    settings=self.settings,
                )
                route = self.api.apply(empty)
            return self._route_state(endpoint, route)
        self.api.apply(
            gateway_token_secret(
                endpoint=identity,
                release_number=release_number,
                token=endpoint.gateway_token,
                settings=self.settings,
            )
        )
        config_map = self.api.get("ConfigMap", routes_name(endpoint.name))
        if config_map is None or declared_generation(config_map) is None:
            # A new gateway starts with an empty table at generation 0.
            config_map = routes_config_map(
                endpoint=identity,
                release_number=release_number,
                document=routes_document(routes=[], generation=0, sticky=None),
                settings=self.settings,
            )
            self.api.apply(config_map)
        self.api.apply(
            gateway_service(
                endpoint=identity, release_number=release_number, settings=self.settings
            )
        )
        deployment = gateway_deployment(
            endpoint=identity,
            release_number=release_number,
            image=self._gateway_image(endpoint),
            config_map=config_map,
            settings=self.settings,
        )
        return self._gateway_state(endpoint, self.api.apply(deployment))

    def set_routes(
        self,
        *,
        endpoint: Endpoint,
        gateway: GatewayState,
        routes: list[Route],
        generation: int,
        sticky: dict[str, str] | None = None,
    ) -> None:
        identity = self._identity(endpoint)
        release_number = self._release_number(endpoint)
        if self.settings.uses_gateway_api:
            kind, name = "HTTPRoute", http_route_name(endpoint.name)
            table = http_route(
                endpoint=identity,
                release_number=release_number,
                routes=routes,
                generation=generation,
                sticky=sticky,
                settings=self.settings,
            )
        else:
            kind, name = "ConfigMap", routes_name(endpoint.name)
            table = routes_config_map(
                endpoint=identity,
                release_number=release_number,
                document={
                    **routes_document(routes=routes, generation=generation, sticky=sticky),
                    # The gateway reads its key digests from the same mounted table.
                    "access": endpoint_access_document(endpoint),
                },
                settings=self.settings,
            )
        self._apply_fenced(kind, name, table, generation)
        if self.settings.uses_gateway_api:
            self._wait_switched(endpoint, generation)
            return
        self.api.apply(
            gateway_deployment(
                endpoint=identity,
                release_number=release_number,
                image=self._gateway_image(endpoint),
                config_map=table,
                settings=self.settings,
            )
        )
        self._wait_switched(endpoint, generation)

    def _apply_fenced(self, kind: str, name: str, table: dict[str, Any], generation: int) -> None:
        """Apply a route table unless a newer generation is held; the resourceVersion read
        with the check makes the write a compare-and-set."""
        current = self.api.get(kind, name)
        held = declared_generation(current)
        if held is not None and held > generation:
            raise StaleGeneration(
                f"The route table is at generation {held}, newer than this run's {generation}."
            )
        body = {**table, "metadata": dict(table["metadata"])}
        if current is not None:
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        try:
            self.api.apply(body)
        except KubernetesApiError as error:
            if error.status != 409:
                raise
            held = declared_generation(self.api.get(kind, name))
            if held is not None and held > generation:
                raise StaleGeneration(
                    f"The route table moved to generation {held} during this run."
                ) from None
            raise DriverError(
                "The route table changed while it was being replaced; the next run retries."
            ) from None

    def _wait_switched(self, endpoint: Endpoint, generation: int) -> None:
        """Return once the gateway serves `generation` everywhere (bounded)."""
        deadline = time.monotonic() + self.settings.switch_timeout_seconds
        while True:
            state = self.observe_gateway(endpoint)
            if state is not None and state.generation is not None:
                if state.generation > generation:
                    raise StaleGeneration(f"The gateway moved on to generation {state.generation}.")
                if state.generation == generation:
                    return
            if time.monotonic() > deadline:
                detail = state.detail if state is not None else "the gateway is gone"
                raise DriverError(
                    f"The gateway did not switch to route table {generation} within "
                    f"{self.settings.switch_timeout_seconds:g} seconds: {detail}"
                )
            time.sleep(POLL_SECONDS)

    def observe_gateway(self, endpoint: Endpoint) -> GatewayState | None:
        """The gateway alone (one GET instead of a LIST)."""
        if self.settings.uses_gateway_api:
            route = self.api.get("HTTPRoute", http_route_name(endpoint.name))
            return self._route_state(endpoint, route) if route is not None else None
        deployment = self.api.get("Deployment", gateway_name(endpoint.name))
        return self._gateway_state(endpoint, deployment) if deployment is not None else None

    def remove_gateway(self, *, gateway: GatewayState) -> None:
        self._remove(COMPONENT_GATEWAY, endpoint_id=gateway.endpoint_id)

    # --- removal and the orphan sweep ---

    def _kinds(self, component: str) -> tuple[str, ...]:
        if component == COMPONENT_SERVER:
            return SERVER_KINDS
        if self.settings.uses_gateway_api:
            return ("HTTPRoute",)
        return GATEWAY_KINDS

    def _remove(self, component: str, *, endpoint_id: int, version_id: int | None = None) -> None:
        """Delete one server's or gateway's objects by label selector."""
        selector = {**self._owner(endpoint_id), LABEL_COMPONENT: component}
        if version_id is not None:
            selector[LABEL_VERSION] = str(int(version_id))
        for kind in self._kinds(component):
            if kind in ("Service", "HTTPRoute"):
                # Not every supported API server serves deletecollection for Services (and
                # HTTPRoutes are custom resources): list, then delete one by one.
                for manifest in self.api.list(kind, selector):
                    self.api.delete(kind, manifest["metadata"]["name"])
            else:
                self.api.delete_collection(kind, selector)

    def list_owned(self) -> list[OwnedResource]:
        groups: dict[tuple[str, int, int | None], list[dict[str, Any]]] = defaultdict(list)
        kinds = ("Deployment", "Service", "ConfigMap", "Secret", *SCALING_KINDS)
        if self.settings.uses_gateway_api:
            kinds += ("HTTPRoute",)
        for kind in kinds:
            for manifest in self.api.list(kind, self._owner()):
                labels = _labels(manifest)
                component = labels.get(LABEL_COMPONENT)
                if component not in (COMPONENT_SERVER, COMPONENT_GATEWAY):
                    continue
                version_id = _number(labels.get(LABEL_VERSION))
                endpoint_id = _number(labels.get(LABEL_ENDPOINT_ID))
                if endpoint_id is None:  # not made by a driver: the selector cannot reach it
                    continue
                key = (
                    component,
                    endpoint_id,
                    version_id if component == COMPONENT_SERVER else None,
                )
                groups[key].append({"kind": kind, **manifest})
        owned = []
        for (component, endpoint_id, version_id), manifests in sorted(
            groups.items(), key=lambda item: (item[0][1], item[0][0], item[0][2] or 0)
        ):
            releases = [_number(_labels(m).get(LABEL_RELEASE)) or 0 for m in manifests]
            names = sorted(f"{m['kind']}/{m['metadata']['name']}" for m in manifests)
            owned.append(
                OwnedResource(
                    role=ResourceRole(component),
                    handle=f"{component}:{endpoint_id}:{version_id or ''}",
                    endpoint_id=endpoint_id,
                    version_id=version_id,
                    release_number=max(releases) or None,
                    detail=", ".join(names),
                )
            )
        return owned

    def remove_owned(self, *, resource: OwnedResource) -> None:
        component, endpoint_text, version_text = resource.handle.split(":")
        endpoint_id = _number(endpoint_text)
        if endpoint_id is None or component not in (COMPONENT_SERVER, COMPONENT_GATEWAY):
            raise DriverError(f"Cannot remove {resource.handle!r}: it names no endpoint.")
        self._remove(component, endpoint_id=endpoint_id, version_id=_number(version_text))
