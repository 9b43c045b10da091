"""An endpoint's Kubernetes objects, built by pure functions: plain data in, API objects out.

Per serving version: a Deployment (the image by digest) and a ClusterIP Service; with the
version's `autoscale`, a HorizontalPodAutoscaler (autoscaling/v2, CPU utilisation) owns the
Deployment's replica count instead, and every version that can run more than one pod gets a
PodDisruptionBudget (policy/v1, at most one pod evicted at a time). Per endpoint,
with `traffic: gateway` (the default): the modeldeck-gateway Deployment and Service, its route
table in a ConfigMap mounted read-only (`--routes-file`), and its admin token in a Secret. The
gateway's pod template carries the route table's sha256, so a new table rolls the gateway pods
(each pod reads the file once, at start); with `traffic: gateway-api`, an HTTPRoute with weighted
backendRefs replaces all of that. With `prediction_log_url` set, the gateway ships its
prediction log to the dashboard (MODELDECK_GATEWAY_PREDICTION_LOG_URL); without it, or with
`traffic: gateway-api`, predictions are not logged.

Object names are made from the endpoint name (a checked DNS label) and ids only, never from
other text a user typed. Every pod runs under the Pod Security "restricted" profile.

Labels: selectors use ids (installation, target, endpoint id, component, version id), which never
change for a running Deployment; the release number and the variant role label only the
objects' metadata, so a new release does not restart the pods of a version it keeps.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from deployments.targets.base import DriverError, Route
from deployments.targets.gateway import route_table_document
from deployments.targets.kubernetes.config import IMAGE_BY_DIGEST, KubernetesSettings
from deployments.targets.serving import serving_arguments

MANAGED_BY = "modeldeck"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_INSTALLATION = "modeldeck.io/installation"
LABEL_TARGET = "modeldeck.io/target"
LABEL_ENDPOINT = "modeldeck.io/endpoint"
LABEL_ENDPOINT_ID = "modeldeck.io/endpoint-id"
LABEL_RELEASE = "modeldeck.io/release"
LABEL_VERSION = "modeldeck.io/version"
LABEL_ROLE = "modeldeck.io/role"
ANNOTATION_MODEL = "modeldeck.io/model"
ANNOTATION_MODEL_VERSION = "modeldeck.io/model-version"
ANNOTATION_SHA256 = "modeldeck.io/sha256"
ANNOTATION_GENERATION = "modeldeck.io/generation"
ANNOTATION_ROUTES_SHA256 = "modeldeck.io/routes-sha256"
ANNOTATION_ROUTES_GENERATION = "modeldeck.io/routes-generation"

COMPONENT_SERVER = "server"
COMPONENT_GATEWAY = "gateway"
ROLES = ("primary", "candidate", "shadow")

SERVER_PORT = 8080
GATEWAY_PORT = 8000
RUN_AS_USER = 10001
MODEL_DIR = "/opt/model"
ROUTES_DIR = "/etc/modeldeck/routes"
ROUTES_KEY = "routes.json"
TOKEN_KEY = "token"  # noqa: S105 - the key inside the Secret, not a secret
TMP_SIZE_LIMIT = "256Mi"
# The runtime finishes in-flight requests for DRAIN_SECONDS after SIGTERM; the pod's grace
# period covers that plus the preStop pause during which Services stop sending new requests.
DRAIN_SECONDS = 20
PRE_STOP_SECONDS = 5
GRACE_SECONDS = 30
PIN_HEADER = "X-Model-Version"
# HTTPRoute rules are limited to 16: one weighted rule plus one pinning rule per version.
MAX_ROUTED_VERSIONS = 15
# Per-version scale (contract: Release.variants "replicas" or "autoscale").
MAX_REPLICAS = 20
SCALING_KINDS = ("HorizontalPodAutoscaler", "PodDisruptionBudget")

ENDPOINT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
# DNS-1035 label: valid for every kind here, Services included.
OBJECT_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
VERSION_REFERENCE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}:[1-9][0-9]{0,8}$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
INSTALLATION = re.compile(r"^[0-9a-f]{1,63}$")


@dataclass(frozen=True)
class EndpointIdentity:
    """What names and labels an endpoint's objects."""

    endpoint_id: int
    name: str
    target_id: int
    installation: str


@dataclass(frozen=True)
class ServingVersion:
    """A version as its server is deployed: the image by digest and what the pod is told."""

    version_id: int
    # "model:N"
    reference: str
    model_name: str
    number: int
    sha256: str
    # repository@sha256:…
    image: str


# --- names and labels -------------------------------------------------------------------------


def _checked_endpoint(name: str) -> str:
    if not isinstance(name, str) or not ENDPOINT_NAME.match(name):
        raise DriverError(f"Endpoint name {str(name)[:50]!r} is not a DNS label.")
    return name


def _object_name(name: str) -> str:
    if not OBJECT_NAME.match(name):
        raise DriverError(f"{name[:80]!r} is not a valid Kubernetes object name.")
    return name


def server_name(endpoint_name: str, version_id: int) -> str:
    """The Deployment and Service of one version server."""
    return _object_name(f"md-{_checked_endpoint(endpoint_name)}-v{int(version_id)}")


def gateway_name(endpoint_name: str) -> str:
    """The gateway's Deployment and Service."""
    return _object_name(f"md-{_checked_endpoint(endpoint_name)}-gateway")


def routes_name(endpoint_name: str) -> str:
    """The ConfigMap holding the gateway's route table."""
    return _object_name(f"md-{_checked_endpoint(endpoint_name)}-routes")


def token_secret_name(endpoint_name: str) -> str:
    """The Secret holding the gateway's admin token."""
    return _object_name(f"md-{_checked_endpoint(endpoint_name)}-gateway-token")


def http_route_name(endpoint_name: str) -> str:
    """The endpoint's HTTPRoute (traffic: gateway-api)."""
    return _object_name(f"md-{_checked_endpoint(endpoint_name)}")


def prediction_log_url(base_url: str, endpoint_name: str) -> str:
    """The dashboard's ingest URL for an endpoint's prediction log."""
    name = _checked_endpoint(endpoint_name)
    return f"{base_url.rstrip('/')}/api/v1/endpoints/{name}/predictions/"


def server_upstream(endpoint_name: str, version_id: int, namespace: str) -> str:
    """The URL the gateway reaches a version server at (its Service)."""
    return f"http://{server_name(endpoint_name, version_id)}.{namespace}.svc:{SERVER_PORT}"


def owner_selector(
    *, installation: str, target_id: int, endpoint_id: int | None = None
) -> dict[str, str]:
    """Labels every object of this installation and target carries (of one endpoint if given)."""
    if not INSTALLATION.match(installation):
        raise DriverError("The installation id is not a label value.")
    selector = {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_INSTALLATION: installation,
        LABEL_TARGET: str(int(target_id)),
    }
    if endpoint_id is not None:
        selector[LABEL_ENDPOINT_ID] = str(int(endpoint_id))
    return selector


def server_selector(endpoint: EndpointIdentity, version_id: int) -> dict[str, str]:
    """The labels that pick one version server's pods (and its objects)."""
    return {
        **owner_selector(
            installation=endpoint.installation,
            target_id=endpoint.target_id,
            endpoint_id=endpoint.endpoint_id,
        ),
        LABEL_COMPONENT: COMPONENT_SERVER,
        LABEL_VERSION: str(int(version_id)),
    }


def gateway_selector(endpoint: EndpointIdentity) -> dict[str, str]:
    """The labels that pick the gateway's pods (and its objects)."""
    return {
        **owner_selector(
            installation=endpoint.installation,
            target_id=endpoint.target_id,
            endpoint_id=endpoint.endpoint_id,
        ),
        LABEL_COMPONENT: COMPONENT_GATEWAY,
    }


def _pod_labels(endpoint: EndpointIdentity, selector: dict[str, str], name: str) -> dict[str, str]:
    return {
        **selector,
        LABEL_NAME: name,
        LABEL_INSTANCE: _checked_endpoint(endpoint.name),
        LABEL_ENDPOINT: endpoint.name,
    }


def _object_labels(
    pod_labels: dict[str, str], release_number: int, role: str | None = None
) -> dict[str, str]:
    labels = {**pod_labels, LABEL_RELEASE: str(int(release_number))}
    if role is not None:
        labels[LABEL_ROLE] = role
    return labels


def _metadata(
    name: str,
    settings: KubernetesSettings,
    labels: dict[str, str],
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": settings.namespace, "labels": labels}
    if annotations:
        metadata["annotations"] = annotations
    return metadata


# --- pods -------------------------------------------------------------------------------------


def pod_security_context() -> dict[str, Any]:
    """Pod-level settings of the Pod Security "restricted" profile."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """Container-level settings of the "restricted" profile, with a read-only root."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _probe(path: str, *, period: int, failures: int = 3) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http", "scheme": "HTTP"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
        "successThreshold": 1,
    }


def _container(
    *,
    name: str,
    image: str,
    command: list[str],
    arguments: list[str],
    port: int,
    ready_path: str,
    live_path: str,
    resources: dict[str, dict[str, str]],
    mounts: Sequence[dict[str, Any]] = (),
    environment: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "args": arguments,
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "readinessProbe": _probe(ready_path, period=5),
        "livenessProbe": _probe(live_path, period=10),
        "resources": {part: dict(values) for part, values in resources.items()},
        "securityContext": container_security_context(),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRE_STOP_SECONDS)]}}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *mounts],  # noqa: S108
    }
    if environment:
        container["env"] = list(environment)
    return container


def _pod_spec(
    container: dict[str, Any],
    settings: KubernetesSettings,
    volumes: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "terminationGracePeriodSeconds": GRACE_SECONDS,
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE_LIMIT}}, *volumes],
    }
    if settings.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": name} for name in settings.image_pull_secrets]
    return spec


def _deployment(
    *,
    metadata: dict[str, Any],
    selector: dict[str, str],
    pod_labels: dict[str, str],
    pod_annotations: dict[str, str],
    replicas: int | None,
    pod_spec: dict[str, Any],
) -> dict[str, Any]:
    template_metadata: dict[str, Any] = {"labels": pod_labels}
    if pod_annotations:
        template_metadata["annotations"] = pod_annotations
    spec: dict[str, Any] = {}
    if replicas is not None:
        # Left out under a HorizontalPodAutoscaler: an applied count would fight its own.
        spec["replicas"] = int(replicas)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            **spec,
            "revisionHistoryLimit": 2,
            "progressDeadlineSeconds": 300,
            "selector": {"matchLabels": selector},
            # A new pod is ready before an old one goes: no capacity dip while rolling.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {"metadata": template_metadata, "spec": pod_spec},
        },
    }


def _service(
    *, metadata: dict[str, Any], selector: dict[str, str], port: int, service_type: str
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "type": service_type,
            "selector": selector,
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


# --- version servers --------------------------------------------------------------------------


def _checked_version(version: ServingVersion) -> ServingVersion:
    if not VERSION_REFERENCE.match(version.reference):
        raise DriverError(f"Version reference {version.reference[:80]!r} is not model:N.")
    if not SHA256_HEX.match(version.sha256):
        raise DriverError(f"{version.reference} has no sha256 recorded.")
    if not IMAGE_BY_DIGEST.match(version.image) or len(version.image) > 500:
        raise DriverError(
            f"The image of {version.reference} ({version.image[:120]!r}) is not an image "
            "reference by digest (repository@sha256:…)."
        )
    return version


def _checked_role(role: str) -> str:
    """The role as plain text (variants may hold TextChoices members)."""
    if role not in ROLES:
        raise DriverError(f"Unknown variant role {str(role)[:20]!r}.")
    return ROLES[ROLES.index(role)]


def _version_annotations(version: ServingVersion) -> dict[str, str]:
    return {
        ANNOTATION_MODEL: version.model_name,
        ANNOTATION_MODEL_VERSION: version.reference,
        ANNOTATION_SHA256: version.sha256,
    }


def checked_scale(
    replicas: Any, autoscale: Mapping[str, Any] | None
) -> tuple[int, dict[str, int] | None]:
    """(replicas, autoscale) of a version, checked: a fixed count 1..20, or
    {min, max, target_cpu_percent} with 1 <= min <= max <= 20 and a 1..100 % CPU target."""
    if autoscale is not None:
        keys = ("min", "max", "target_cpu_percent")
        if not isinstance(autoscale, Mapping) or set(autoscale) != set(keys):
            raise DriverError("autoscale takes min, max and target_cpu_percent.")
        values = {key: autoscale[key] for key in keys}
        if any(isinstance(v, bool) or not isinstance(v, int) for v in values.values()) or not (
            1 <= values["min"] <= values["max"] <= MAX_REPLICAS
            and 1 <= values["target_cpu_percent"] <= 100
        ):
            raise DriverError(
                f"autoscale needs 1 <= min <= max <= {MAX_REPLICAS} and a target_cpu_percent "
                "from 1 to 100."
            )
        return values["min"], values
    if isinstance(replicas, bool) or not isinstance(replicas, int):
        raise DriverError("replicas must be a whole number.")
    if not 1 <= replicas <= MAX_REPLICAS:
        raise DriverError(f"replicas must be from 1 to {MAX_REPLICAS}.")
    return replicas, None


def scaling_manifests(
    *,
    endpoint: EndpointIdentity,
    version: ServingVersion,
    role: str,
    release_number: int,
    replicas: int,
    autoscale: Mapping[str, Any] | None = None,
    settings: KubernetesSettings,
) -> list[dict[str, Any]]:
    """A version server's HorizontalPodAutoscaler (with `autoscale`) and PodDisruptionBudget
    (whenever it may run more than one pod); empty for a single fixed pod."""
    replicas, autoscale = checked_scale(replicas, autoscale)
    role = _checked_role(role)
    name = server_name(endpoint.name, version.version_id)
    selector = server_selector(endpoint, version.version_id)
    labels = _object_labels(
        _pod_labels(endpoint, selector, "modeldeck-server"), release_number, role
    )
    objects: list[dict[str, Any]] = []
    if autoscale is not None:
        objects.append(
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": _metadata(name, settings, labels),
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                    "minReplicas": autoscale["min"],
                    "maxReplicas": autoscale["max"],
                    "metrics": [
                        {
                            "type": "Resource",
                            "resource": {
                                "name": "cpu",
                                "target": {
                                    "type": "Utilization",
                                    "averageUtilization": autoscale["target_cpu_percent"],
                                },
                            },
                        }
                    ],
                },
            }
        )
    if autoscale is not None or replicas > 1:
        # Node drains evict one pod at a time and never wait on a version's last pod forever
        # (minAvailable would block a drain of a one-pod version for good).
        objects.append(
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": _metadata(name, settings, labels),
                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}},
            }
        )
    return objects


def server_manifests(
    *,
    endpoint: EndpointIdentity,
    version: ServingVersion,
    role: str,
    release_number: int,
    replicas: int,
    settings: KubernetesSettings,
    autoscale: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The Service and Deployment of one version server (see scaling_manifests for the rest)."""
    replicas, autoscale = checked_scale(replicas, autoscale)
    version = _checked_version(version)
    role = _checked_role(role)
    name = server_name(endpoint.name, version.version_id)
    selector = server_selector(endpoint, version.version_id)
    pod_labels = _pod_labels(endpoint, selector, "modeldeck-server")
    labels = _object_labels(pod_labels, release_number, role)
    annotations = _version_annotations(version)
    arguments = [
        "--model-dir", MODEL_DIR,
        "--model-name", endpoint.name,
        "--model-version", version.reference,
        "--endpoint", endpoint.name,
        "--variant", role,
        "--threads", str(settings.threads),
        *serving_arguments(
            settings.workers, settings.batch_max_rows, settings.batch_max_delay_us
        ),
        "--host", "0.0.0.0",  # noqa: S104 - inside the pod; reached through the Service
        "--port", str(SERVER_PORT),
        "--drain-seconds", str(DRAIN_SECONDS),
    ]  # fmt: skip
    container = _container(
        name="server",
        image=version.image,
        command=["modeldeck-serve"],
        arguments=arguments,
        port=SERVER_PORT,
        ready_path="/v2/health/ready",
        live_path="/v2/health/live",
        resources=settings.resources["server"],
    )
    service = _service(
        metadata=_metadata(name, settings, labels, annotations),
        selector=selector,
        port=SERVER_PORT,
        service_type="ClusterIP",
    )
    deployment = _deployment(
        metadata=_metadata(name, settings, labels, annotations),
        selector=selector,
        pod_labels=pod_labels,
        pod_annotations=annotations,
        replicas=None if autoscale is not None else replicas,
        pod_spec=_pod_spec(container, settings),
    )
    return [service, deployment]


# --- the gateway (traffic: gateway) -----------------------------------------------------------


def routes_text(document: Mapping[str, Any]) -> str:
    """The route table file the gateway reads, byte-for-byte stable for the same table."""
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def routes_document(
    *, routes: Sequence[Route], generation: int, sticky: Mapping[str, str] | None
) -> dict[str, Any]:
    """The gateway's route table (the same document `PUT /-/routes` takes)."""
    return route_table_document(routes=list(routes), generation=generation, sticky=sticky)


def routes_config_map(
    *,
    endpoint: EndpointIdentity,
    release_number: int,
    document: Mapping[str, Any],
    settings: KubernetesSettings,
) -> dict[str, Any]:
    """The ConfigMap the gateway mounts; its annotation holds the table's generation."""
    selector = gateway_selector(endpoint)
    labels = _object_labels(_pod_labels(endpoint, selector, "modeldeck-gateway"), release_number)
    annotations = {ANNOTATION_GENERATION: str(int(document["generation"]))}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(routes_name(endpoint.name), settings, labels, annotations),
        "data": {ROUTES_KEY: routes_text(document)},
    }


def declared_generation(config_map: Mapping[str, Any] | None) -> int | None:
    """The route-table generation a routes ConfigMap or an HTTPRoute declares (annotation)."""
    if not config_map:
        return None
    annotations = (config_map.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(ANNOTATION_GENERATION, "")
    return int(value) if str(value).isdigit() else None


def gateway_token_secret(
    *,
    endpoint: EndpointIdentity,
    release_number: int,
    token: str,
    settings: KubernetesSettings,
) -> dict[str, Any]:
    """The Secret the gateway reads its admin token from."""
    selector = gateway_selector(endpoint)
    labels = _object_labels(_pod_labels(endpoint, selector, "modeldeck-gateway"), release_number)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(token_secret_name(endpoint.name), settings, labels),
        "type": "Opaque",
        "data": {TOKEN_KEY: base64.b64encode(token.encode()).decode()},
    }


def gateway_service(
    *, endpoint: EndpointIdentity, release_number: int, settings: KubernetesSettings
) -> dict[str, Any]:
    """The endpoint's stable address: the gateway's Service."""
    selector = gateway_selector(endpoint)
    labels = _object_labels(_pod_labels(endpoint, selector, "modeldeck-gateway"), release_number)
    return _service(
        metadata=_metadata(gateway_name(endpoint.name), settings, labels),
        selector=selector,
        port=GATEWAY_PORT,
        service_type=settings.gateway_service_type,
    )


def gateway_deployment(
    *,
    endpoint: EndpointIdentity,
    release_number: int,
    image: str,
    config_map: Mapping[str, Any],
    settings: KubernetesSettings,
) -> dict[str, Any]:
    """The gateway Deployment; its pods roll whenever the mounted route table changes."""
    if not IMAGE_BY_DIGEST.match(image):
        raise DriverError(f"The gateway image {image[:120]!r} is not an image by digest.")
    selector = gateway_selector(endpoint)
    pod_labels = _pod_labels(endpoint, selector, "modeldeck-gateway")
    text = config_map["data"][ROUTES_KEY]
    generation = declared_generation(config_map) or 0
    pod_annotations = {
        ANNOTATION_ROUTES_SHA256: hashlib.sha256(text.encode()).hexdigest(),
        ANNOTATION_ROUTES_GENERATION: str(generation),
    }
    arguments = [
        "--endpoint", endpoint.name,
        "--routes-file", f"{ROUTES_DIR}/{ROUTES_KEY}",
        "--host", "0.0.0.0",  # noqa: S104 - inside the pod; reached through the Service
        "--port", str(GATEWAY_PORT),
        "--drain-seconds", str(DRAIN_SECONDS),
    ]  # fmt: skip
    token = {
        "name": "MODELDECK_GATEWAY_ADMIN_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": token_secret_name(endpoint.name), "key": TOKEN_KEY}},
    }
    environment = [token]
    if settings.prediction_log_url:
        # The prediction log ships to the dashboard, authenticated by the same token.
        environment.append(
            {
                "name": "MODELDECK_GATEWAY_PREDICTION_LOG_URL",
                "value": prediction_log_url(settings.prediction_log_url, endpoint.name),
            }
        )
    container = _container(
        name="gateway",
        image=image,
        command=["modeldeck-gateway"],
        arguments=arguments,
        port=GATEWAY_PORT,
        ready_path="/-/health",
        live_path="/-/health",
        resources=settings.resources["gateway"],
        mounts=[{"name": "routes", "mountPath": ROUTES_DIR, "readOnly": True}],
        environment=environment,
    )
    routes_volume = {
        "name": "routes",
        "configMap": {
            "name": routes_name(endpoint.name),
            "items": [{"key": ROUTES_KEY, "path": ROUTES_KEY}],
            "defaultMode": 0o444,
        },
    }
    return _deployment(
        metadata=_metadata(
            gateway_name(endpoint.name), settings, _object_labels(pod_labels, release_number)
        ),
        selector=selector,
        pod_labels=pod_labels,
        pod_annotations=pod_annotations,
        replicas=settings.gateway_replicas,
        pod_spec=_pod_spec(container, settings, [routes_volume]),
    )


# --- traffic: gateway-api ---------------------------------------------------------------------


def http_route(
    *,
    endpoint: EndpointIdentity,
    release_number: int,
    routes: Sequence[Route],
    generation: int,
    sticky: Mapping[str, str] | None,
    settings: KubernetesSettings,
) -> dict[str, Any]:
    """An HTTPRoute splitting traffic by weight, mirroring to shadows, pinning by header."""
    if settings.parent is None:
        raise DriverError('traffic: "gateway-api" needs gateway_api.parent in the target.')
    if sticky:
        raise DriverError(
            'Sticky sessions need the modeldeck gateway (traffic: "gateway"); '
            "the Gateway API has no standard sticky weighted routing."
        )
    if len(routes) > MAX_ROUTED_VERSIONS:
        raise DriverError(f"An HTTPRoute routes at most {MAX_ROUTED_VERSIONS} versions.")
    selector = gateway_selector(endpoint)
    labels = _object_labels(_pod_labels(endpoint, selector, "modeldeck-gateway"), release_number)
    root = {"path": {"type": "PathPrefix", "value": "/"}}

    def backend(route: Route) -> dict[str, Any]:
        return {"name": server_name(endpoint.name, route.version_id), "port": SERVER_PORT}

    rules: list[dict[str, Any]] = []
    live = [route for route in routes if route.role != "shadow"]
    if live:
        rule: dict[str, Any] = {
            "matches": [root],
            "backendRefs": [{**backend(route), "weight": route.weight} for route in live],
        }
        mirrors = []
        for shadow in routes:
            if shadow.role != "shadow" or shadow.mirror_percent <= 0:
                continue
            mirror: dict[str, Any] = {"backendRef": backend(shadow)}
            if shadow.mirror_percent < 100:
                # Percentage mirroring: Gateway API v1.3+ (GEP-3171); 100 % needs no field.
                mirror["percent"] = shadow.mirror_percent
            mirrors.append({"type": "RequestMirror", "requestMirror": mirror})
        if mirrors:
            rule["filters"] = mirrors
        rules.append(rule)
    for route in routes:
        # X-Model-Version pins a request to one version, as the modeldeck gateway does.
        pin = {"type": "Exact", "name": PIN_HEADER, "value": route.version}
        rules.append(
            {
                "matches": [{**root, "headers": [pin]}],
                "backendRefs": [{**backend(route), "weight": 1}],
            }
        )
    spec: dict[str, Any] = {"parentRefs": [settings.parent.reference()], "rules": rules}
    hostname = settings.hostname_for(endpoint.name)
    if hostname:
        spec["hostnames"] = [hostname]
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": _metadata(
            http_route_name(endpoint.name),
            settings,
            labels,
            {ANNOTATION_GENERATION: str(int(generation))},
        ),
        "spec": spec,
    }


# --- a whole release --------------------------------------------------------------------------


def routes_for_variants(
    *, endpoint_name: str, variants: Sequence[Mapping[str, Any]], namespace: str
) -> list[Route]:
    """The routes the reconciler sets for these variants (servers reached by their Service)."""
    routes = []
    for variant in variants:
        role = _checked_role(variant["role"])
        shadow = role == "shadow"
        routes.append(
            Route(
                version=str(variant["version"]),
                version_id=int(variant["version_id"]),
                upstream=server_upstream(endpoint_name, int(variant["version_id"]), namespace),
                weight=0 if shadow else int(variant["weight"]),
                role=role,
                mirror_percent=int(variant.get("mirror_percent", 0)) if shadow else 0,
            )
        )
    return routes


def release_manifests(
    *,
    endpoint: EndpointIdentity,
    variants: Sequence[Mapping[str, Any]],
    versions: Mapping[int, ServingVersion],
    release_number: int,
    replicas: int,
    generation: int,
    sticky: Mapping[str, str] | None,
    token: str,
    gateway_image: str,
    settings: KubernetesSettings,
    access: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Every object of a release, in the order to apply them (`access`: the endpoint's key
    requirement and key digests, which the gateway reads with its route table)."""
    services, deployments, scaling = [], [], []
    for variant in variants:
        version = versions.get(int(variant["version_id"]))
        if version is None:
            raise DriverError(f"No serving image is known for {variant['version']}.")
        scale = {
            "endpoint": endpoint,
            "version": version,
            "role": variant["role"],
            "release_number": release_number,
            # Per version (Release.variants); the release-wide count where a variant has none.
            "replicas": variant.get("replicas", replicas),
            "autoscale": variant.get("autoscale"),
            "settings": settings,
        }
        service, deployment = server_manifests(**scale)
        services.append(service)
        deployments.append(deployment)
        scaling.extend(scaling_manifests(**scale))
    routes = routes_for_variants(
        endpoint_name=endpoint.name, variants=variants, namespace=settings.namespace
    )
    if settings.uses_gateway_api:
        route = http_route(
            endpoint=endpoint,
            release_number=release_number,
            routes=routes,
            generation=generation,
            sticky=sticky,
            settings=settings,
        )
        return [*services, *deployments, *scaling, route]
    document = routes_document(routes=routes, generation=generation, sticky=sticky)
    if access is not None:
        document = {**document, "access": dict(access)}
    config_map = routes_config_map(
        endpoint=endpoint, release_number=release_number, document=document, settings=settings
    )
    return [
        gateway_token_secret(
            endpoint=endpoint, release_number=release_number, token=token, settings=settings
        ),
        config_map,
        *services,
        gateway_service(endpoint=endpoint, release_number=release_number, settings=settings),
        *deployments,
        *scaling,
        gateway_deployment(
            endpoint=endpoint,
            release_number=release_number,
            image=gateway_image,
            config_map=config_map,
            settings=settings,
        ),
    ]
