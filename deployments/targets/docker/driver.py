"""Docker targets: version servers and one gateway per endpoint as containers on a Docker engine.

Each endpoint gets a user network; its gateway reaches the version servers there by container
name. Every container runs from a serving image built by `deployments.targets.docker.images`
(deployed by image id or registry digest), as uid 10001, with every capability dropped,
no-new-privileges, a read-only root with a small /tmp tmpfs, memory and pid limits, bounded logs,
and ports published on 127.0.0.1 unless the target says otherwise. The Docker socket is never
mounted.

Names of containers, networks and volumes are made of the installation id and row ids only, and
every value that reaches a container command (endpoint name, "model:N", role) is checked against
a strict pattern first. Containers carry the labels of `labels_for`, so `observe` and the orphan
sweep find them from the engine alone; the engine is the only record.

With `prediction_log_url` (the dashboard as containers reach it), each gateway ships its
prediction log to the dashboard's ingest API; without it, predictions are not logged.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from common.credentials import CredentialError, credential_environment, credential_file
from deployments.targets.base import (
    LABEL_ENDPOINT,
    LABEL_INSTALLATION,
    LABEL_RELEASE,
    LABEL_ROLE,
    LABEL_TARGET,
    LABEL_VERSION,
    DriverError,
    GatewayState,
    Observation,
    OwnedResource,
    Replica,
    ResourceRole,
    ServerSpec,
    ServerState,
    TargetDriver,
    dashboard_base_url,
    installation_id,
    labels_for,
)
from deployments.targets.gateway import AdminApiRoutes, gateway_read_routes, http_ready
from deployments.targets.policy import HostRefused, check_docker_settings, check_url
from deployments.targets.serving import SERVING_LIMITS, serving_arguments

DEFAULT_BASE_IMAGE = "modeldeck/base:bookworm"
DEFAULT_GATEWAY_PORTS = "19100-19899"
RUNTIME_USER = "10001:10001"
SERVER_PORT = 8080
GATEWAY_PORT = 8000
GATEWAY_STATE_DIR = "/var/lib/modeldeck"
# How long a stopping container may finish in-flight requests before SIGKILL.
STOP_GRACE_SECONDS = 10
LOG_TAIL_LINES = 20
GATEWAY_PORT_ATTEMPTS = 20
LABEL_VERSION_REFERENCE = "modeldeck.version-ref"
LABEL_BUILD = "modeldeck.build"
# Which replica of its version a server container is (0 .. replicas-1).
LABEL_REPLICA = "modeldeck.replica"

ENDPOINT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
VERSION_REFERENCE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}:[0-9]{1,9}$")
ROLES = {"primary", "candidate", "shadow"}
RESOURCE_NAME = re.compile(
    r"^mdk-[0-9a-f]{16}-e[0-9]{1,18}(-(v[0-9]{1,18}(-r[0-9]{1,2})?|gateway))?$"
)
ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
# Variables that would change what runs or who it trusts (loader, interpreter, our own settings).
RESERVED_ENV_PREFIXES = ("MODELDECK_", "LD_", "PYTHON")
RESERVED_ENV_NAMES = {"PATH", "HOME"}
DOCKER_HOST = re.compile(r"^(unix|tcp|ssh|http|https)://[A-Za-z0-9._:/@\[\]%-]{1,250}$")
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = rf"(?:{_LABEL}(?:\.{_LABEL})*(?::[0-9]{{1,5}})?/)?"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = rf"{_DOMAIN}{_COMPONENT}(?:/{_COMPONENT})*"
REPOSITORY = re.compile(rf"^{_REPOSITORY}$")
IMAGE_REFERENCE = re.compile(
    rf"^{_REPOSITORY}(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?(?:@sha256:[0-9a-f]{{64}})?$"
)
MEMORY = re.compile(r"^([1-9][0-9]{0,12})([kmg]?)$")
RUNTIME_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
HOST_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.:-]{0,251}[A-Za-z0-9])?$")
# An http(s) base URL: no credentials, query or fragment, nothing a shell or header could split.
# The Docker host as containers reach it (mapped with extra_hosts to the engine's host-gateway).
DOCKER_HOST_ALIAS = "host.docker.internal"
CONFIG_KEYS = {
    "docker_host", "tls_ca_cert", "tls_client_cert", "tls_client_key", "tls_verify",
    "base_image", "publish_host", "access_host", "gateway_port_range", "mem_limit",
    "gateway_mem_limit", "pids_limit", "cpus", "threads", "workers", "batch_max_rows",
    "batch_max_delay_us", "env", "registry", "runtime", "prediction_log_url",
}  # fmt: skip


def docker_errors(*, not_found_only: bool = False) -> tuple[type[BaseException], ...]:
    """The exceptions the Docker SDK raises for engine trouble (imported on first use)."""
    import docker.errors
    import requests.exceptions

    if not_found_only:
        return (docker.errors.NotFound,)
    return (docker.errors.DockerException, requests.exceptions.RequestException)


# --- settings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DockerSettings:
    """A docker target's `config`, checked, with defaults filled in."""

    docker_host: str | None = None
    tls_ca_cert: str | None = None
    tls_client_cert: str | None = None
    tls_client_key: str | None = None
    tls_verify: bool = True
    base_image: str = DEFAULT_BASE_IMAGE
    publish_host: str = "127.0.0.1"
    access_host: str = "127.0.0.1"
    gateway_ports: range = range(19100, 19900)
    mem_limit: int = 1024**3
    gateway_mem_limit: int = 256 * 1024**2
    pids_limit: int = 256
    cpus: float | None = None
    threads: int = 0
    # Server processes per container, and opt-in dynamic batching (0: off; the delay None: the
    # runtime's default). See serving_arguments.
    workers: int = 1
    batch_max_rows: int = 0
    batch_max_delay_us: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    registry: dict[str, str] | None = None
    runtime: str | None = None
    # The dashboard's base URL as the gateway containers reach it ("": no prediction log).
    prediction_log_url: str = ""


def _fail(message: str, key: str) -> DriverError:
    error = DriverError(f"Docker target setting {key}: {message}")
    error.key = key  # type: ignore[attr-defined]
    return error


def _path(value: Any, key: str) -> str:
    try:
        return credential_file(value)
    except CredentialError as error:
        raise _fail(str(error), key) from None


def _memory(value: Any, key: str) -> int:
    text = (
        str(value).lower() if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    )
    match = MEMORY.fullmatch(text)
    if not match:
        raise _fail("must be a size such as 512m or 2g.", key)
    number = int(match.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match.group(2)]
    if not 32 * 1024**2 <= number <= 1024**4:
        raise _fail("must be between 32m and 1024g.", key)
    return number


def _whole(value: Any, key: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(f"must be a whole number from {low} to {high}.", key)
    return value


def docker_settings(config: dict[str, Any] | None) -> DockerSettings:
    """Check a docker target's config; DriverError naming the first bad setting."""
    config = dict(config or {})
    unknown = sorted(set(config) - CONFIG_KEYS)
    if unknown:
        raise _fail(f"unknown ({', '.join(unknown)}).", unknown[0])
    values: dict[str, Any] = {}
    if config.get("docker_host") is not None:
        if not isinstance(config["docker_host"], str) or not DOCKER_HOST.fullmatch(
            config["docker_host"]
        ):
            raise _fail(
                "must look like unix:///path, tcp://host:port or ssh://user@host.", "docker_host"
            )
        values["docker_host"] = config["docker_host"]
    for key in ("tls_ca_cert", "tls_client_cert", "tls_client_key"):
        if config.get(key) is not None:
            values[key] = _path(config[key], key)
    if bool(values.get("tls_client_cert")) != bool(values.get("tls_client_key")):
        raise _fail("tls_client_cert and tls_client_key go together.", "tls_client_cert")
    if "tls_verify" in config:
        if not isinstance(config["tls_verify"], bool):
            raise _fail("must be true or false.", "tls_verify")
        values["tls_verify"] = config["tls_verify"]
    if "base_image" in config:
        if not isinstance(config["base_image"], str) or not IMAGE_REFERENCE.fullmatch(
            config["base_image"]
        ):
            raise _fail("must be an image reference such as modeldeck/base:bookworm.", "base_image")
        values["base_image"] = config["base_image"]
    if "publish_host" in config:
        try:
            values["publish_host"] = str(ipaddress.ip_address(config["publish_host"]))
        except ValueError:
            raise _fail(
                "must be an IP address (127.0.0.1 keeps ports local).", "publish_host"
            ) from None
    publish = ipaddress.ip_address(values.get("publish_host", "127.0.0.1"))
    access = "127.0.0.1" if publish.is_unspecified else str(publish)
    if "access_host" in config:
        if not isinstance(config["access_host"], str) or not HOST_NAME.fullmatch(
            config["access_host"]
        ):
            raise _fail("must be a host name or IP address.", "access_host")
        access = config["access_host"]
    values["access_host"] = f"[{access}]" if ":" in access else access
    if "gateway_port_range" in config:
        match = re.fullmatch(r"([0-9]{4,5})-([0-9]{4,5})", str(config["gateway_port_range"]))
        low, high = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
        if not 1024 <= low <= high <= 65535:
            raise _fail("must look like 19100-19899 (ports 1024-65535).", "gateway_port_range")
        values["gateway_ports"] = range(low, high + 1)
    for key in ("mem_limit", "gateway_mem_limit"):
        if key in config:
            values[key] = _memory(config[key], key)
    if "pids_limit" in config:
        values["pids_limit"] = _whole(config["pids_limit"], "pids_limit", 32, 65536)
    if "cpus" in config:
        cpus = config["cpus"]
        if isinstance(cpus, bool) or not isinstance(cpus, (int, float)) or not 0.1 <= cpus <= 256:
            raise _fail("must be a number from 0.1 to 256.", "cpus")
        values["cpus"] = float(cpus)
    if "threads" in config:
        values["threads"] = _whole(config["threads"], "threads", 0, 64)
    if "workers" in config:
        values["workers"] = _whole(config["workers"], "workers", *SERVING_LIMITS["workers"])
        cores = math.ceil(values["cpus"]) if "cpus" in values else None
        if cores is not None and values["workers"] > cores:
            # Each worker is a process of its own: more of them than the container's CPU share
            # only adds context switches and memory (each loads the model).
            raise _fail(
                f"must be at most {cores}, the cores cpus ({values['cpus']:g}) gives a container.",
                "workers",
            )
    if "batch_max_rows" in config:
        values["batch_max_rows"] = _whole(
            config["batch_max_rows"], "batch_max_rows", *SERVING_LIMITS["batch_max_rows"]
        )
    if "batch_max_delay_us" in config:
        values["batch_max_delay_us"] = _whole(
            config["batch_max_delay_us"],
            "batch_max_delay_us",
            *SERVING_LIMITS["batch_max_delay_us"],
        )
        if not values.get("batch_max_rows"):
            raise _fail(
                "needs batch_max_rows above 0 (without batching it does nothing).",
                "batch_max_delay_us",
            )
    if "env" in config:
        values["env"] = _environment(config["env"])
    if config.get("registry") is not None:
        values["registry"] = _registry(config["registry"])
    if config.get("runtime") is not None:
        if not isinstance(config["runtime"], str) or not RUNTIME_NAME.fullmatch(config["runtime"]):
            raise _fail("must be an OCI runtime name such as runc or runsc.", "runtime")
        values["runtime"] = config["runtime"]
    if config.get("prediction_log_url") not in (None, ""):
        values["prediction_log_url"] = _base_url(config["prediction_log_url"], "prediction_log_url")
    return DockerSettings(**values)


def _base_url(value: Any, key: str) -> str:
    url = dashboard_base_url(value)
    if url is None:
        raise _fail(
            "must be an http(s) URL such as http://host.docker.internal:8000, "
            "without credentials, query or fragment.",
            key,
        )
    return url


def _environment(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or len(value) > 32:
        raise _fail("must be an object of at most 32 variables.", "env")
    environment = {}
    for name, text in value.items():
        if (
            not isinstance(name, str)
            or not ENV_NAME.fullmatch(name)
            or name.startswith(RESERVED_ENV_PREFIXES)
            or name in RESERVED_ENV_NAMES
        ):
            raise _fail(f"{str(name)[:40]!r} is not an allowed variable name.", "env")
        if not isinstance(text, str) or len(text) > 1024 or any(c in text for c in "\x00\r\n"):
            raise _fail(f"the value of {name} must be one line of at most 1024 characters.", "env")
        environment[name] = text
    return environment


def _registry(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or set(value) - {"repository", "username_env", "password_env"}:
        raise _fail("must be {repository, username_env, password_env}.", "registry")
    repository = value.get("repository")
    if (
        not isinstance(repository, str)
        or not REPOSITORY.fullmatch(repository)
        or "/" not in repository
    ):
        raise _fail("repository must look like registry.example.com/team/serving.", "registry")
    registry = {"repository": repository}
    for key in ("username_env", "password_env"):
        name = value.get(key)
        if name is not None:
            # Only MODELDECK_TARGET_* variables: naming SECRET_KEY here would send it to a
            # registry of the team's choosing as a password.
            try:
                registry[key] = credential_environment(name)
            except CredentialError as error:
                raise _fail(f"{key} {error}", "registry") from None
    if bool(registry.get("username_env")) != bool(registry.get("password_env")):
        raise _fail("username_env and password_env go together.", "registry")
    return registry


def docker_client(config: DockerSettings):
    """A Docker SDK client for the target's engine (TLS files named in the config)."""
    import docker
    import docker.tls

    tls: Any = False
    if config.tls_ca_cert or config.tls_client_cert:
        client_cert = (
            (config.tls_client_cert, config.tls_client_key) if config.tls_client_cert else None
        )
        tls = docker.tls.TLSConfig(
            client_cert=client_cert, ca_cert=config.tls_ca_cert, verify=config.tls_verify
        )
    base_url = config.docker_host or os.environ.get("DOCKER_HOST") or None
    try:
        return docker.DockerClient(base_url=base_url, tls=tls, version="auto", timeout=60)
    except docker_errors() as error:
        raise DriverError(
            f"The Docker engine at {base_url or 'the default socket'} is unreachable: {error}"
        ) from None


# --- the driver --------------------------------------------------------------------------------


def _checked(pattern: re.Pattern, value: Any, what: str) -> str:
    text = str(value)
    if not pattern.fullmatch(text):
        raise DriverError(
            f"Refusing to start a container: {what} {text[:80]!r} is not well-formed."
        )
    return text


class DockerDriver(AdminApiRoutes, TargetDriver):
    """Containers on one Docker engine, found again by their labels."""

    kind = "docker"

    def __init__(self, target) -> None:
        super().__init__(target)
        self.config = docker_settings(target.config)
        self._client = None

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """Check the settings (see CONFIG_KEYS); unknown keys and bad values are refused."""
        from common.errors import ApplicationError

        try:
            values = docker_settings(config)
        except DriverError as error:
            raise ApplicationError(str(error), {"config": getattr(error, "key", "")}) from None
        # Which engines the workers may be sent to is the operator's call, not a team's: any
        # other address would let a team admin make the workers connect wherever they like.
        if values.docker_host and values.docker_host not in settings.TARGET_DOCKER_HOSTS:
            raise ApplicationError(
                f"Docker target setting docker_host: {values.docker_host} is not one of the "
                "engines this installation allows (TARGET_DOCKER_HOSTS); leave it out to use "
                "the workers' own engine.",
                {"config": "docker_host"},
            )
        check_docker_settings(values)
        return dict(config)

    @classmethod
    def credential_references(cls, config: dict[str, Any]) -> list[tuple[str, str, str]]:
        files = [
            (key, "file", config[key])
            for key in ("tls_ca_cert", "tls_client_cert", "tls_client_key")
            if config.get(key)
        ]
        registry = config.get("registry") or {}
        variables = [
            ("registry", "variable", registry[key])
            for key in ("username_env", "password_env")
            if registry.get(key)
        ]
        return files + variables

    # --- engine and names ---

    @property
    def client(self):
        if self._client is None:
            self._client = docker_client(self.config)
        return self._client

    @property
    def installation(self) -> str:
        return installation_id()

    def _name(self, endpoint_id: int, suffix: str = "") -> str:
        name = f"mdk-{self.installation}-e{int(endpoint_id)}{suffix}"
        return _checked(RESOURCE_NAME, name, "resource name")

    def _server_name(self, endpoint_id: int, version_id: int, replica: int = 0) -> str:
        suffix = f"-r{int(replica)}" if replica else ""
        return self._name(endpoint_id, f"-v{int(version_id)}{suffix}")

    def _gateway_name(self, endpoint_id: int) -> str:
        return self._name(endpoint_id, "-gateway")

    def _filters(self, endpoint_id: int | None = None) -> dict:
        labels = [f"{LABEL_INSTALLATION}={self.installation}", f"{LABEL_TARGET}={self.target.pk}"]
        if endpoint_id is not None:
            labels.append(f"{LABEL_ENDPOINT}={int(endpoint_id)}")
        return {"label": labels}

    def _containers(self, endpoint_id: int | None = None) -> list:
        try:
            return self.client.containers.list(
                all=True, sparse=True, filters=self._filters(endpoint_id)
            )
        except docker_errors() as error:
            raise DriverError(f"The Docker engine did not answer: {error}") from None

    def _get(self, name_or_id: str):
        try:
            return self.client.containers.get(name_or_id)
        except docker_errors(not_found_only=True):
            return None
        except docker_errors() as error:
            raise DriverError(f"The Docker engine did not answer: {error}") from None

    # --- observation ---

    @staticmethod
    def _summary_running(container) -> bool:
        return container.attrs.get("State") == "running"

    @staticmethod
    def _summary_port(container, private: int) -> int | None:
        for port in container.attrs.get("Ports") or []:
            if port.get("PrivatePort") == private and port.get("PublicPort"):
                return int(port["PublicPort"])
        return None

    def _log_tail(self, container_id: str) -> str:
        container = self._get(container_id)
        if container is None:
            return ""
        try:
            return container.logs(tail=LOG_TAIL_LINES).decode(errors="replace").strip()[-2000:]
        except docker_errors():
            return ""

    def _replica(self, container) -> Replica:
        labels = container.attrs.get("Labels") or {}
        running = self._summary_running(container)
        port = self._summary_port(container, SERVER_PORT)
        ready = (
            running
            and port is not None
            and http_ready(f"http://{self.config.access_host}:{port}/v2/health/ready")
        )
        name = (container.attrs.get("Names") or ["/"])[0].lstrip("/")
        return Replica(
            index=_int_or_none(labels.get(LABEL_REPLICA)) or 0,
            handle=container.id,
            upstream=f"http://{name}:{SERVER_PORT}",
            alive=running,
            ready=ready,
            metrics_url=f"http://{self.config.access_host}:{port}" if port else "",
            detail="" if running else self._log_tail(container.id),
        )

    def _server_state(self, containers: list) -> ServerState:
        """A version server made of its replica containers."""
        pairs = sorted(
            ((container, self._replica(container)) for container in containers),
            key=lambda pair: pair[1].index,
        )
        labels = pairs[0][0].attrs.get("Labels") or {}
        replicas = [replica for _, replica in pairs]
        ready = [replica for replica in replicas if replica.ready]
        return ServerState(
            endpoint_id=int(labels.get(LABEL_ENDPOINT, 0)),
            version_id=int(labels.get(LABEL_VERSION, 0)),
            version=labels.get(LABEL_VERSION_REFERENCE, ""),
            release_number=int(labels.get(LABEL_RELEASE, 0) or 0),
            handle=replicas[0].handle,
            upstream=replicas[0].upstream,
            alive=any(replica.alive for replica in replicas),
            ready=len(ready) == len(replicas),
            ready_replicas=len(ready),
            desired_replicas=len(replicas),
            upstreams=tuple(replica.upstream for replica in ready),
            detail=next((replica.detail for replica in replicas if replica.detail), ""),
            metrics_url=replicas[0].metrics_url,
            instances=tuple(replicas),
        )

    def _gateway_state(self, container, token: str) -> GatewayState:
        labels = container.attrs.get("Labels") or {}
        running = self._summary_running(container)
        port = self._summary_port(container, GATEWAY_PORT)
        url = f"http://{self.config.access_host}:{port}" if port else ""
        table = gateway_read_routes(admin_url=url, token=token) if running and port else None
        return GatewayState(
            endpoint_id=int(labels.get(LABEL_ENDPOINT, 0)),
            handle=container.id,
            url=url,
            admin_url=url,
            alive=running,
            ready=table is not None,
            generation=table.get("generation") if table is not None else None,
            detail="" if running else self._log_tail(container.id),
        )

    def observe(self, *, endpoint) -> Observation:
        by_version: dict[str, list] = {}
        gateway = None
        for container in self._containers(endpoint.pk):
            labels = container.attrs.get("Labels") or {}
            role = labels.get(LABEL_ROLE)
            if role == ResourceRole.GATEWAY:
                gateway = self._gateway_state(container, endpoint.gateway_token)
            elif role == ResourceRole.SERVER:
                by_version.setdefault(labels.get(LABEL_VERSION, ""), []).append(container)
        servers = [self._server_state(containers) for containers in by_version.values()]
        return Observation(servers=servers, gateway=gateway)

    # --- starting ---

    def _network(self, endpoint) -> str:
        name = self._name(endpoint.pk)
        try:
            if not self.client.networks.list(names=[name]):
                self.client.networks.create(
                    name,
                    driver="bridge",
                    check_duplicate=True,
                    labels=labels_for(
                        installation=self.installation,
                        target_id=self.target.pk,
                        endpoint_id=endpoint.pk,
                        role=ResourceRole.GATEWAY,
                    ),
                )
        except docker_errors() as error:
            if "already exists" not in str(error):
                raise DriverError(f"Could not create the network {name}: {error}") from None
        return name

    def _security(self, *, memory: int) -> dict[str, Any]:
        """What every container gets, whatever it runs."""
        options: dict[str, Any] = {
            "user": RUNTIME_USER,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges:true"],
            "read_only": True,
            # The only writable place: small, and nothing there can be executed.
            "tmpfs": {"/tmp": "rw,noexec,nosuid,nodev,size=64m"},  # noqa: S108
            "mem_limit": memory,
            "memswap_limit": memory,
            "pids_limit": self.config.pids_limit,
            "init": True,
            "restart_policy": {"Name": "unless-stopped"},
            "log_config": {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}},
            "stop_signal": "SIGTERM",
        }
        if self.config.cpus:
            options["nano_cpus"] = int(self.config.cpus * 1e9)
        if self.config.runtime:
            options["runtime"] = self.config.runtime
        return options

    def _start(
        self,
        *,
        name: str,
        image: str,
        command: list[str],
        ports: dict,
        labels: dict,
        network: str,
        memory: int,
        environment: dict[str, str],
        volumes: dict | None = None,
        extra_hosts: dict[str, str] | None = None,
    ):
        create = {
            "name": name, "command": command, "labels": labels, "network": network,
            "ports": ports, "environment": environment, "volumes": volumes or {},
            "detach": True, **self._security(memory=memory),
        }  # fmt: skip
        if extra_hosts:
            create["extra_hosts"] = extra_hosts
        try:
            if "@" in image:
                # A pushed image: pull it by digest (with the target's credentials) if absent.
                try:
                    self.client.images.get(image)
                except docker_errors(not_found_only=True):
                    self._pull(image)
            return self.client.containers.run(image, **create)
        except docker_errors() as error:
            leftover = self._get(name)
            if leftover is not None:
                self._remove_container(leftover, grace=0)
            raise DriverError(f"Could not start the container {name}: {error}") from None

    def _pull(self, image: str) -> None:
        from deployments.targets.docker.images import BuildError, _registry_auth

        repository, digest = image.split("@", 1)
        try:
            auth = _registry_auth(self.config.registry) if self.config.registry else None
        except BuildError as error:
            raise DriverError(str(error)) from None
        self.client.images.pull(repository, tag=digest, auth_config=auth)

    def _image_for(self, *, version_id: int):
        """The build of the version's serving image, building it here when needed."""
        from deployments.targets.docker.images import (
            BuildError,
            deploy_reference,
            ensure_version_image,
        )
        from registry.models import ModelVersion

        version = ModelVersion.objects.select_related("model").filter(pk=version_id).first()
        if version is None:
            raise DriverError(f"Version {version_id} no longer exists.")
        try:
            build = ensure_version_image(version=version, target=self.target)
        except BuildError as error:
            raise DriverError(str(error)) from None
        return build, deploy_reference(build)

    def _environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**self.config.env, **(extra or {})}

    def ensure_server(self, *, endpoint, spec: ServerSpec) -> ServerState:
        """Make replica containers 0 .. spec.replicas-1 run; replicas above are left to
        `remove_replicas`, which the reconciler calls once the gateway no longer uses them."""
        endpoint_name = _checked(ENDPOINT_NAME, endpoint.name, "endpoint name")
        version = _checked(VERSION_REFERENCE, spec.version, "version")
        role = spec.role if spec.role in ROLES else None
        if role is None:
            raise DriverError(f"Refusing to start a container: role {spec.role[:20]!r} is unknown.")
        containers = []
        image = None
        for index in range(max(1, spec.replicas)):
            name = self._server_name(endpoint.pk, spec.version_id, index)
            existing = self._get(name)
            if existing is not None:
                if existing.status == "running":
                    containers.append(self._summary(existing))
                    continue
                self._remove_container(existing, grace=0)
            if image is None:
                image = self._image_for(version_id=spec.version_id)
            container = self._start_server(
                endpoint, spec, name=name, index=index, image=image,
                endpoint_name=endpoint_name, version=version, role=role,
            )  # fmt: skip
            containers.append(self._summary(container))
        return self._server_state(containers)

    def _start_server(
        self, endpoint, spec: ServerSpec, *, name: str, index: int, image, endpoint_name: str,
        version: str, role: str,
    ):  # fmt: skip
        build, image = image
        labels = {
            **labels_for(
                installation=self.installation, target_id=self.target.pk,
                endpoint_id=endpoint.pk, role=ResourceRole.SERVER,
                version_id=spec.version_id, release_number=spec.release_number,
            ),
            LABEL_VERSION_REFERENCE: version,
            LABEL_BUILD: str(int(build.pk)),
            LABEL_REPLICA: str(int(index)),
        }  # fmt: skip
        command = [
            "modeldeck-serve",
            "--model-dir", "/opt/model",
            "--model-name", endpoint_name,
            "--model-version", version,
            "--variant", role,
            "--endpoint", endpoint_name,
            "--threads", str(self.config.threads),
            *serving_arguments(
                self.config.workers, self.config.batch_max_rows, self.config.batch_max_delay_us
            ),
            "--host", "0.0.0.0",  # noqa: S104 - inside the container; published on publish_host
            "--port", str(SERVER_PORT),
            "--drain-seconds", str(STOP_GRACE_SECONDS - 2),
        ]  # fmt: skip
        return self._start(
            name=name, image=image, command=command, labels=labels,
            network=self._network(endpoint), memory=self.config.mem_limit,
            ports={f"{SERVER_PORT}/tcp": (self.config.publish_host, None)},
            environment=self._environment(),
        )  # fmt: skip

    def _summary(self, container):
        """The container as the list API describes it (what the state builders read)."""
        found = self.client.containers.list(all=True, sparse=True, filters={"id": container.id})
        if not found:
            raise DriverError(f"The container {container.name} disappeared.")
        return found[0]

    def _gateway_port(self, endpoint) -> list[int]:
        """Ports to try for the gateway: the one its URL had, then free ones of the range."""
        ports = self.config.gateway_ports
        taken = set()
        for container in self.client.containers.list(all=True, sparse=True):
            for port in container.attrs.get("Ports") or []:
                if port.get("PublicPort"):
                    taken.add(int(port["PublicPort"]))
        candidates = []
        previous = urlsplit(endpoint.url).port if endpoint.url else None
        if previous in ports and previous not in taken:
            candidates.append(previous)
        # Start at a spot derived from the endpoint id so parallel workers rarely collide.
        offset = int(endpoint.pk) % len(ports)
        for index in range(len(ports)):
            port = ports[(offset + index) % len(ports)]
            if port not in taken and port not in candidates:
                candidates.append(port)
            if len(candidates) >= GATEWAY_PORT_ATTEMPTS:
                break
        return candidates

    def _gateway_image(self, endpoint) -> tuple[Any, str]:
        """The gateway runs the runtime of a serving image of one of the endpoint's versions."""
        release = endpoint.desired_release or endpoint.live_release
        version_ids = [variant["version_id"] for variant in (release.variants if release else [])]
        if not version_ids:
            raise DriverError("The endpoint serves no version, so it has no image for a gateway.")
        return self._image_for(version_id=version_ids[0])

    def ensure_gateway(self, *, endpoint) -> GatewayState:
        endpoint_name = _checked(ENDPOINT_NAME, endpoint.name, "endpoint name")
        name = self._gateway_name(endpoint.pk)
        existing = self._get(name)
        if existing is not None:
            if existing.status != "running":
                try:
                    existing.start()  # keeps its port, so the endpoint URL stays the same
                except docker_errors():
                    self._remove_container(existing, grace=0)
                    existing = None
            if existing is not None:
                return self._gateway_state(self._summary(existing), endpoint.gateway_token)
        build, image = self._gateway_image(endpoint)
        labels = {
            **labels_for(
                installation=self.installation, target_id=self.target.pk,
                endpoint_id=endpoint.pk, role=ResourceRole.GATEWAY,
            ),
            LABEL_BUILD: str(int(build.pk)),
        }  # fmt: skip
        command = [
            "modeldeck-gateway",
            "--endpoint", endpoint_name,
            "--state-file", f"{GATEWAY_STATE_DIR}/routes.json",
            "--host", "0.0.0.0",  # noqa: S104 - inside the container; published on publish_host
            "--port", str(GATEWAY_PORT),
            "--drain-seconds", str(STOP_GRACE_SECONDS - 2),
        ]  # fmt: skip
        network = self._network(endpoint)
        # The admin token travels in the environment, never on a command line.
        environment = self._environment({"MODELDECK_GATEWAY_ADMIN_TOKEN": endpoint.gateway_token})
        extra_hosts = None
        if self.config.prediction_log_url:
            try:  # the name may resolve elsewhere now than when the target was saved
                check_url(self.config.prediction_log_url)
            except HostRefused as error:
                raise DriverError(f"Docker target setting prediction_log_url: {error}.") from None
            # The prediction log ships to the dashboard, authenticated by the same token.
            environment["MODELDECK_GATEWAY_PREDICTION_LOG_URL"] = (
                f"{self.config.prediction_log_url}/api/v1/endpoints/{endpoint_name}/predictions/"
            )
            if urlsplit(self.config.prediction_log_url).hostname == DOCKER_HOST_ALIAS:
                extra_hosts = {DOCKER_HOST_ALIAS: "host-gateway"}
        volumes = {name: {"bind": GATEWAY_STATE_DIR, "mode": "rw"}}
        last_error = None
        for port in self._gateway_port(endpoint):
            try:
                container = self._start(
                    name=name, image=image, command=command, labels=labels, network=network,
                    memory=self.config.gateway_mem_limit, environment=environment,
                    ports={f"{GATEWAY_PORT}/tcp": (self.config.publish_host, port)},
                    volumes=volumes, extra_hosts=extra_hosts,
                )  # fmt: skip
            except DriverError as error:
                text = str(error)
                if "already allocated" in text or "address already in use" in text:
                    last_error = error
                    continue
                raise
            return self._gateway_state(self._summary(container), endpoint.gateway_token)
        raise DriverError(f"No free gateway port in {self.config.gateway_ports}: {last_error}")

    # --- stopping ---

    def _remove_container(self, container, *, grace: int = STOP_GRACE_SECONDS) -> None:
        try:
            if grace and container.status == "running":
                container.stop(timeout=grace)
            container.remove(force=True, v=False)
        except docker_errors(not_found_only=True):
            pass
        except docker_errors() as error:
            if "already in progress" not in str(error):
                raise DriverError(
                    f"Could not remove the container {container.name}: {error}"
                ) from None

    def _cleanup_endpoint(self, endpoint_id: int, *, gateway_removed: bool) -> None:
        """Remove the gateway's state volume and, once nothing is left, the endpoint network."""
        try:
            if gateway_removed:
                for volume in self.client.volumes.list(
                    filters={"name": self._gateway_name(endpoint_id)}
                ):
                    if volume.name == self._gateway_name(endpoint_id):
                        volume.remove(force=True)
            if not self._containers(endpoint_id):
                for network in self.client.networks.list(names=[self._name(endpoint_id)]):
                    if network.name == self._name(endpoint_id):
                        network.remove()
        except docker_errors(not_found_only=True):
            pass
        except docker_errors() as error:
            raise DriverError(f"Could not clean up endpoint {endpoint_id}: {error}") from None

    def _remove_handle(self, handle: str, *, gateway: bool) -> None:
        container = self._get(handle)
        if container is None:
            return
        endpoint_id = int((container.labels or {}).get(LABEL_ENDPOINT, 0) or 0)
        owned = (container.labels or {}).get(LABEL_INSTALLATION) == self.installation
        if not owned:
            raise DriverError(
                f"Refusing to remove {container.name}: it is not this installation's."
            )
        self._remove_container(container)
        if endpoint_id:
            self._cleanup_endpoint(endpoint_id, gateway_removed=gateway)

    def remove_server(self, *, server: ServerState) -> None:
        handles = [replica.handle for replica in sorted(server.instances, key=lambda r: -r.index)]
        for handle in handles or [server.handle]:
            self._remove_handle(handle, gateway=False)

    def remove_replicas(self, *, endpoint, server: ServerState, keep: int) -> None:
        surplus = [replica for replica in server.instances if replica.index >= keep]
        for replica in sorted(surplus, key=lambda replica: -replica.index):
            self._remove_handle(replica.handle, gateway=False)

    def remove_gateway(self, *, gateway: GatewayState) -> None:
        self._remove_handle(gateway.handle, gateway=True)

    def list_owned(self) -> list[OwnedResource]:
        owned = []
        for container in self._containers():
            labels = container.attrs.get("Labels") or {}
            try:
                role = ResourceRole(labels.get(LABEL_ROLE, ""))
            except ValueError:
                role, orphaned = ResourceRole.SERVER, True
            else:
                orphaned = False
            name = (container.attrs.get("Names") or ["/"])[0].lstrip("/")
            owned.append(
                OwnedResource(
                    role=role,
                    handle=container.id,
                    endpoint_id=_int_or_none(labels.get(LABEL_ENDPOINT)),
                    version_id=_int_or_none(labels.get(LABEL_VERSION)),
                    release_number=_int_or_none(labels.get(LABEL_RELEASE)),
                    detail=f"{name} ({container.attrs.get('State', '')})",
                    orphaned=orphaned or not RESOURCE_NAME.fullmatch(name),
                )
            )
        return owned

    def remove_owned(self, *, resource: OwnedResource) -> None:
        self._remove_handle(resource.handle, gateway=resource.role == ResourceRole.GATEWAY)


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
