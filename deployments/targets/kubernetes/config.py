"""A Kubernetes target's `config`: checked and normalised into KubernetesSettings.

Connection secrets are never stored: `kubeconfig` names a file on the worker, `kubeconfig_env`
names an environment variable holding that file's path, or `in_cluster` uses the worker pod's
service account. Everything else shapes the manifests.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from common.credentials import CredentialError, credential_environment, credential_file
from deployments.targets.base import DriverError, dashboard_base_url
from deployments.targets.docker.driver import DockerSettings, docker_settings
from deployments.targets.serving import SERVING_LIMITS

TRAFFIC_GATEWAY = "gateway"
TRAFFIC_GATEWAY_API = "gateway-api"
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")
ENDPOINT_PLACEHOLDER = "{endpoint}"

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
ENVIRONMENT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# repository@sha256:digest; the repository may carry a registry host with a port.
IMAGE_BY_DIGEST = re.compile(
    r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]([a-z0-9._-]*[a-z0-9])?)*"
    r"@sha256:[0-9a-f]{64}$"
)
QUANTITY = re.compile(r"^[0-9]{1,9}(\.[0-9]{1,3})?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$")
RESOURCE_NAMES = ("cpu", "memory", "ephemeral-storage")
# What a quantity's suffix multiplies its number by (Kubernetes resource.Quantity).
QUANTITY_SUFFIXES = {
    "": Decimal(1), "m": Decimal("0.001"),
    "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9, "T": Decimal(10) ** 12,
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40,
}  # fmt: skip
HOSTNAME_TEMPLATE = re.compile(r"^(\*\.)?[a-z0-9{}]([-a-z0-9.{}]*[a-z0-9}])?$")
PUBLIC_URL = re.compile(r"^https?://[A-Za-z0-9.{}:\[\]-]+(/[A-Za-z0-9._~/{}-]*)?$")
# An http(s) base URL: no credentials, query, fragment or placeholder.

DEFAULT_RESOURCES = {
    "server": {
        "requests": {"cpu": "250m", "memory": "512Mi"},
        "limits": {"cpu": "2", "memory": "2Gi"},
    },
    "gateway": {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"},
    },
}

# Serving settings passed to every version server (runtime/README.md, "--workers" and the
# "--batch-*" flags); bench/RESULTS.md measures what they are worth.
MAX_WORKERS = SERVING_LIMITS["workers"][1]
MAX_BATCH_ROWS = SERVING_LIMITS["batch_max_rows"][1]
MAX_BATCH_DELAY_US = SERVING_LIMITS["batch_max_delay_us"][1]

CONFIG_KEYS = (
    "namespace", "kubeconfig", "kubeconfig_env", "context", "in_cluster", "traffic",
    "gateway_api", "public_url", "resources", "gateway_image", "gateway_replicas",
    "gateway_service_type", "image_pull_secrets", "threads", "switch_timeout_seconds",
    "prediction_log_url", "build", "workers", "batch_max_rows", "batch_max_delay_us",
)  # fmt: skip
# `build`: the Docker engine serving images are built on and the registry the cluster pulls
# them from (the same settings, and the same checks, as a Docker target's).
BUILD_KEYS = (
    "docker_host", "tls_ca_cert", "tls_client_cert", "tls_client_key", "tls_verify",
    "base_image", "registry",
)  # fmt: skip


class ConfigError(DriverError):
    """A bad target setting; `key` names it."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class ParentGateway:
    """The Gateway API `Gateway` an HTTPRoute attaches to (traffic: gateway-api)."""

    name: str
    namespace: str = ""
    section_name: str = ""

    def reference(self) -> dict[str, str]:
        """The HTTPRoute parentRef."""
        reference = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": self.name}
        if self.namespace:
            reference["namespace"] = self.namespace
        if self.section_name:
            reference["sectionName"] = self.section_name
        return reference


@dataclass(frozen=True)
class KubernetesSettings:
    """A Kubernetes target's settings, checked."""

    namespace: str = "default"
    kubeconfig: str = ""
    kubeconfig_env: str = ""
    context: str = ""
    in_cluster: bool = False
    # "gateway": a modeldeck-gateway Deployment reads its route table from a ConfigMap;
    # "gateway-api": an HTTPRoute with weighted backendRefs, no gateway Deployment.
    traffic: str = TRAFFIC_GATEWAY
    parent: ParentGateway | None = None
    # A hostname template ("{endpoint}.models.example.com") for the HTTPRoute.
    hostname: str = ""
    # The endpoint URL shown to users; "{endpoint}" is replaced by the endpoint name.
    public_url: str = ""
    resources: dict[str, dict[str, dict[str, str]]] = field(
        default_factory=lambda: {kind: dict(value) for kind, value in DEFAULT_RESOURCES.items()}
    )
    gateway_image: str = ""
    gateway_replicas: int = 1
    gateway_service_type: str = "ClusterIP"
    image_pull_secrets: tuple[str, ...] = ()
    threads: int = 0
    # Server processes per pod sharing its port (`--workers`; 1: not passed).
    workers: int = 1
    # Dynamic batching: rows of one merged inference (`--batch-max-rows`; 0: off, not passed).
    batch_max_rows: int = 0
    # How long a request waits for others (`--batch-max-delay-us`; None: the runtime's default).
    batch_max_delay_us: int | None = None
    # How long set_routes waits for the gateway to serve the new table.
    switch_timeout_seconds: float = 60.0
    # The dashboard's base URL as gateway pods reach it ("": no prediction log).
    prediction_log_url: str = ""
    # Where serving images are built and pushed (None: this target cannot build them).
    build: DockerSettings | None = None

    @property
    def uses_gateway_api(self) -> bool:
        """Traffic is split by a Gateway API implementation instead of modeldeck-gateway."""
        return self.traffic == TRAFFIC_GATEWAY_API

    def hostname_for(self, endpoint_name: str) -> str:
        """The HTTPRoute hostname of an endpoint ("" when none is configured)."""
        return self.hostname.replace(ENDPOINT_PLACEHOLDER, endpoint_name)


def _text(config: dict[str, Any], key: str, *, limit: int = 253) -> str:
    value = config.get(key, "")
    if not isinstance(value, str) or len(value) > limit or "\x00" in value:
        raise ConfigError(f"{key} must be text of at most {limit} characters.", key)
    return value


def _resources(value: Any) -> dict[str, dict[str, dict[str, str]]]:
    merged = {
        kind: {part: dict(v) for part, v in d.items()} for kind, d in DEFAULT_RESOURCES.items()
    }
    if value is None:
        return merged
    if not isinstance(value, dict) or set(value) - set(merged):
        raise ConfigError('resources takes "server" and "gateway" objects.', "resources")
    for kind, parts in value.items():
        if not isinstance(parts, dict) or set(parts) - {"requests", "limits"}:
            raise ConfigError(
                f'resources.{kind} takes "requests" and "limits" objects.', "resources"
            )
        for part, quantities in parts.items():
            if not isinstance(quantities, dict):
                raise ConfigError(f"resources.{kind}.{part} must be an object.", "resources")
            for name, quantity in quantities.items():
                if name not in RESOURCE_NAMES:
                    raise ConfigError(
                        f"resources.{kind}.{part} takes {', '.join(RESOURCE_NAMES)}.", "resources"
                    )
                if isinstance(quantity, bool) or not isinstance(quantity, (str, int)):
                    raise ConfigError(f"resources.{kind}.{part}.{name} is a quantity.", "resources")
                if not QUANTITY.match(str(quantity)):
                    raise ConfigError(
                        f"resources.{kind}.{part}.{name}: {str(quantity)[:20]!r} is not a "
                        'quantity such as "500m" or "1Gi".',
                        "resources",
                    )
                merged[kind][part][name] = str(quantity)
    return merged


def cpu_cores(quantity: str) -> Decimal:
    """The cores a CPU quantity ("500m", "2", "1.5") stands for; `quantity` matches QUANTITY."""
    match = QUANTITY.match(quantity)
    if not match:
        raise ValueError(f"{quantity[:20]!r} is not a quantity.")
    suffix = match.group(2) or ""
    return Decimal(quantity.removesuffix(suffix)) * QUANTITY_SUFFIXES[suffix]


def _whole(config: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{key} must be a whole number from {low} to {high}.", key)
    return value


def _serving(
    config: dict[str, Any], resources: dict[str, dict[str, dict[str, str]]]
) -> tuple[int, int, int | None]:
    """(workers, batch_max_rows, batch_max_delay_us) of the version servers, checked."""
    workers = _whole(config, "workers", 1, 1, MAX_WORKERS)
    limit = resources["server"].get("limits", {}).get("cpu")
    if limit is not None:
        # More processes than the pod has cores only makes them take turns (CFS quota), each
        # holding its own copy of the model; one worker is always allowed.
        cores = max(1, math.ceil(cpu_cores(limit)))
        if workers > cores:
            raise ConfigError(
                f"workers ({workers}) exceeds the {cores} core(s) of the server pods' CPU limit "
                f'(resources.server.limits.cpu "{limit}"): lower workers or raise the limit.',
                "workers",
            )
    rows = _whole(config, "batch_max_rows", 0, 0, MAX_BATCH_ROWS)
    delay = None
    if "batch_max_delay_us" in config:
        delay = _whole(config, "batch_max_delay_us", 0, 0, MAX_BATCH_DELAY_US)
        if rows == 0:
            raise ConfigError(
                "batch_max_delay_us needs batch_max_rows above 0: without batching it does "
                "nothing.",
                "batch_max_delay_us",
            )
    return workers, rows, delay


def _parent(value: Any) -> tuple[ParentGateway, str]:
    if not isinstance(value, dict) or set(value) - {"parent", "hostname"}:
        raise ConfigError(
            'gateway_api takes {"parent": {"name", "namespace", "section_name"}, "hostname"}.',
            "gateway_api",
        )
    parent = value.get("parent")
    if not isinstance(parent, dict) or set(parent) - {"name", "namespace", "section_name"}:
        raise ConfigError(
            'gateway_api.parent takes "name", "namespace", "section_name".', "gateway_api"
        )
    name = parent.get("name")
    namespace = parent.get("namespace", "")
    section = parent.get("section_name", "")
    if not isinstance(name, str) or len(name) > 253 or not DNS_SUBDOMAIN.match(name):
        raise ConfigError("gateway_api.parent.name must be a Gateway's name.", "gateway_api")
    if namespace and (not isinstance(namespace, str) or not DNS_LABEL.match(namespace)):
        raise ConfigError("gateway_api.parent.namespace must be a namespace name.", "gateway_api")
    if section and (not isinstance(section, str) or not DNS_SUBDOMAIN.match(section)):
        raise ConfigError("gateway_api.parent.section_name must be a listener name.", "gateway_api")
    hostname = value.get("hostname", "")
    if hostname:
        sample = hostname.replace(ENDPOINT_PLACEHOLDER, "x") if isinstance(hostname, str) else ""
        if (
            not isinstance(hostname, str)
            or len(hostname) > 200
            or not HOSTNAME_TEMPLATE.match(hostname)
            or not DNS_SUBDOMAIN.match(sample.removeprefix("*."))
        ):
            raise ConfigError(
                'gateway_api.hostname must be a hostname such as "{endpoint}.models.example.com".',
                "gateway_api",
            )
    return ParentGateway(name=name, namespace=namespace or "", section_name=section or ""), hostname


def kubernetes_settings(config: dict[str, Any] | None) -> KubernetesSettings:
    """Check a target's config; ConfigError (a DriverError with `key`) on the first bad value."""
    config = config or {}
    if not isinstance(config, dict):
        raise ConfigError("config must be an object.", "config")
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise ConfigError(f"Unknown kubernetes target settings: {', '.join(unknown)}.", unknown[0])
    namespace = _text(config, "namespace", limit=63) or "default"
    if not DNS_LABEL.match(namespace):
        raise ConfigError("namespace must be a Kubernetes namespace name.", "namespace")
    kubeconfig = _text(config, "kubeconfig", limit=4096)
    kubeconfig_env = _text(config, "kubeconfig_env", limit=128)
    if kubeconfig and kubeconfig_env:
        raise ConfigError("Give kubeconfig or kubeconfig_env, not both.", "kubeconfig_env")
    if kubeconfig:
        try:
            kubeconfig = credential_file(kubeconfig)
        except CredentialError as error:
            raise ConfigError(f"kubeconfig {error}", "kubeconfig") from None
    if kubeconfig_env:
        try:
            credential_environment(kubeconfig_env)
        except CredentialError as error:
            raise ConfigError(f"kubeconfig_env {error}", "kubeconfig_env") from None
    context = _text(config, "context")
    if context and not context.isprintable():
        raise ConfigError("context must be printable text.", "context")
    in_cluster = config.get("in_cluster", False)
    if not isinstance(in_cluster, bool):
        raise ConfigError("in_cluster must be true or false.", "in_cluster")
    if in_cluster and (kubeconfig or kubeconfig_env or context):
        raise ConfigError("in_cluster takes no kubeconfig or context.", "in_cluster")
    traffic = config.get("traffic", TRAFFIC_GATEWAY)
    if traffic not in (TRAFFIC_GATEWAY, TRAFFIC_GATEWAY_API):
        raise ConfigError('traffic must be "gateway" or "gateway-api".', "traffic")
    parent, hostname = None, ""
    if traffic == TRAFFIC_GATEWAY_API:
        parent, hostname = _parent(config.get("gateway_api"))
    elif "gateway_api" in config:
        raise ConfigError('gateway_api needs traffic: "gateway-api".', "gateway_api")
    public_url = _text(config, "public_url", limit=500)
    if public_url and not PUBLIC_URL.fullmatch(public_url):
        raise ConfigError("public_url must be an http(s) URL.", "public_url")
    gateway_image = _text(config, "gateway_image", limit=500)
    if gateway_image and not IMAGE_BY_DIGEST.match(gateway_image):
        raise ConfigError(
            "gateway_image must name an image by digest (repo@sha256:…).", "gateway_image"
        )
    replicas = config.get("gateway_replicas", 1)
    if isinstance(replicas, bool) or not isinstance(replicas, int) or not 1 <= replicas <= 20:
        raise ConfigError(
            "gateway_replicas must be a whole number from 1 to 20.", "gateway_replicas"
        )
    service_type = config.get("gateway_service_type", "ClusterIP")
    if service_type not in SERVICE_TYPES:
        raise ConfigError(
            f"gateway_service_type must be one of {', '.join(SERVICE_TYPES)}.",
            "gateway_service_type",
        )
    secrets = config.get("image_pull_secrets", [])
    if not isinstance(secrets, list) or not all(
        isinstance(name, str) and len(name) <= 253 and DNS_SUBDOMAIN.match(name) for name in secrets
    ):
        raise ConfigError(
            "image_pull_secrets must be a list of Secret names.", "image_pull_secrets"
        )
    threads = _whole(config, "threads", 0, 0, 64)
    timeout = config.get("switch_timeout_seconds", 60)
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not 1 <= timeout <= 600
    ):
        raise ConfigError("switch_timeout_seconds must be from 1 to 600.", "switch_timeout_seconds")
    prediction_log_url = _base_url(config, "prediction_log_url")
    build = _build(config.get("build"))
    resources = _resources(config.get("resources"))
    workers, batch_max_rows, batch_max_delay_us = _serving(config, resources)
    return KubernetesSettings(
        namespace=namespace,
        kubeconfig=kubeconfig,
        kubeconfig_env=kubeconfig_env,
        context=context,
        in_cluster=in_cluster,
        traffic=traffic,
        parent=parent,
        hostname=hostname,
        public_url=public_url,
        resources=resources,
        gateway_image=gateway_image,
        gateway_replicas=replicas,
        gateway_service_type=service_type,
        image_pull_secrets=tuple(secrets),
        threads=threads,
        workers=workers,
        batch_max_rows=batch_max_rows,
        batch_max_delay_us=batch_max_delay_us,
        switch_timeout_seconds=float(timeout),
        prediction_log_url=prediction_log_url,
        build=build,
    )


def _build(value: Any) -> DockerSettings | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - set(BUILD_KEYS):
        raise ConfigError(f"build takes {', '.join(BUILD_KEYS)}.", "build")
    if not isinstance(value.get("registry"), dict):
        raise ConfigError(
            'build needs "registry": {"repository", "username_env", "password_env"}: the '
            "cluster pulls serving images from it.",
            "build",
        )
    try:
        return docker_settings(value)
    except DriverError as error:
        detail = str(error).removeprefix("Docker target setting ")
        raise ConfigError(f"build: {detail}", "build") from None


def _base_url(config: dict[str, Any], key: str) -> str:
    value = config.get(key)
    if value in (None, ""):
        return ""
    url = dashboard_base_url(value)
    if url is None:
        raise ConfigError(
            f"{key} must be an http(s) URL such as http://modeldeck.modeldeck.svc:8000, "
            "without credentials, query or fragment.",
            key,
        )
    return url
