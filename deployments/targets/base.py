"""The one interface every target driver implements (local, docker, kubernetes, edge).

The reconciler is level-triggered and drives every kind the same way:

1. ``observe(endpoint=)`` — what runs for this endpoint right now (servers and gateway), with
   liveness and readiness as the driver can see them. Never changes anything.
2. ``ensure_server(endpoint=, spec=)`` for every version the desired release wants — start it
   when missing, restart it when dead, leave it alone when it runs. Idempotent.
3. poll ``observe`` until every wanted server is ``ready`` (bounded by the reconciler).
4. ``ensure_gateway(endpoint=)`` — the endpoint's one gateway, on a stable URL. Idempotent.
5. ``set_routes(endpoint=, gateway=, routes=, generation=)`` — replace the gateway's whole
   route table in one step, fenced by the endpoint generation (the gateway refuses a generation
   older than the one it holds, so a stale reconcile run cannot undo a newer one).
6. ``remove_server(server=)`` for every server no longer wanted (after the gateway switched
   away from it), and ``remove_gateway`` when the endpoint stops.

``list_owned()`` / ``remove_owned()`` let the periodic sweep remove things whose endpoint (or
desired version) no longer exists, e.g. after a worker was killed between starting a process
and recording it.

Everything a driver starts carries the labels in :func:`labels_for` (endpoint id, version id,
release number, role, installation), so it can be found again from the outside after any crash;
the driver's own bookkeeping (rows, state files) is a cache of that, never the only record.

Drivers raise :class:`DriverError` for failures the reconciler should report on the endpoint
(readable message), :class:`StaleGeneration` when the gateway already holds a newer route table.
Any other exception is a bug and fails the reconcile run loudly.

Methods take keyword-only arguments and may block (network, process start) but must return
within a few tens of seconds; waiting for readiness is the reconciler's job, not the driver's.
"""

from __future__ import annotations

import abc
import enum
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from common.errors import ApplicationError

if TYPE_CHECKING:
    from deployments.models import Endpoint, Target

# Label keys put on every process/container/object a driver starts (Docker labels, Kubernetes
# labels, environment variables of local processes).
LABEL_INSTALLATION = "modeldeck.installation"
LABEL_TARGET = "modeldeck.target"
LABEL_ENDPOINT = "modeldeck.endpoint"
LABEL_ROLE = "modeldeck.role"
LABEL_VERSION = "modeldeck.version"
LABEL_RELEASE = "modeldeck.release"


class DriverError(Exception):
    """The target refused or failed an operation; the message is shown on the endpoint."""


class StaleGeneration(DriverError):
    """The gateway already holds a route table of a newer generation; this run is stale."""


class ResourceRole(enum.StrEnum):
    """What a started thing is for."""

    SERVER = "server"
    GATEWAY = "gateway"


@dataclass(frozen=True)
class ServerSpec:
    """One version server the desired release wants for an endpoint.

    ``key`` identifies the server within its endpoint: a release that keeps a version keeps its
    server (it is not restarted because weights changed).
    """

    endpoint_id: int
    endpoint_name: str
    version_id: int
    # "model:N", as the gateway and X-Model-Version name it.
    version: str
    model_name: str
    version_number: int
    # The release that asked for this server (a label; an existing server keeps its own).
    release_number: int
    # Which role the version has in the release ("primary", "candidate", "shadow"); a label.
    role: str = "primary"
    replicas: int = 1
    autoscale: dict[str, int] | None = None

    @property
    def key(self) -> str:
        """Stable identity of the server within the endpoint."""
        return f"v{self.version_id}"


@dataclass(frozen=True)
class Replica:
    """One process or container of a version server, as the driver observed it."""

    # 0 .. replicas-1 while wanted; a scale-down removes the highest indexes (after the
    # gateway stopped sending them requests).
    index: int
    handle: str
    upstream: str
    alive: bool
    ready: bool
    metrics_url: str = ""
    detail: str = ""


@dataclass(frozen=True)
class ServerState:
    """A version server as the driver observed it."""

    endpoint_id: int
    version_id: int
    version: str
    release_number: int
    # Driver-specific identity (pid, container id, deployment name).
    handle: str
    # Base URL the *gateway* uses to reach this server (may differ from what the host sees).
    upstream: str
    alive: bool
    ready: bool
    ready_replicas: int = 1
    desired_replicas: int = 1
    upstreams: tuple[str, ...] = ()
    detail: str = ""
    # Base URL the *worker* scrapes /metrics from, when `upstream` is not reachable from it.
    metrics_url: str = ""
    # Drivers that run each replica themselves (local, docker) list them, by replica index;
    # drivers whose platform keeps the count (kubernetes) leave it empty.
    instances: tuple[Replica, ...] = ()

    @property
    def key(self) -> str:
        """Same identity as :attr:`ServerSpec.key`."""
        return f"v{self.version_id}"


@dataclass(frozen=True)
class GatewayState:
    """An endpoint's gateway as the driver observed it."""

    endpoint_id: int
    handle: str
    # The public inference base URL (stored as endpoint.url).
    url: str
    # Base URL of the gateway's admin API as the worker reaches it (``PUT {admin_url}/-/routes``).
    admin_url: str
    alive: bool
    ready: bool
    # The route-table generation the gateway holds, when it could be read; None when unknown.
    generation: int | None = None
    detail: str = ""


@dataclass(frozen=True)
class Observation:
    """Everything a driver found running for one endpoint."""

    servers: list[ServerState] = field(default_factory=list)
    gateway: GatewayState | None = None

    def server(self, key: str) -> ServerState | None:
        """The observed server with this key, if any."""
        return next((server for server in self.servers if server.key == key), None)


@dataclass(frozen=True)
class Route:
    """One row of a gateway's route table."""

    version: str
    version_id: int
    upstream: str
    # Share of live traffic, 0-100; live routes sum to 100. Zero for a shadow.
    weight: int
    role: str
    # For a shadow: the percentage of requests mirrored to it (answers are discarded).
    mirror_percent: int = 0
    # Every replica's base URL when the version runs more than one (`upstream` is the first);
    # the gateway balances the route's share across them.
    upstreams: tuple[str, ...] = ()


@dataclass(frozen=True)
class OwnedResource:
    """Something a driver started, as found by :meth:`TargetDriver.list_owned`."""

    role: ResourceRole
    handle: str
    endpoint_id: int | None
    version_id: int | None = None
    release_number: int | None = None
    detail: str = ""
    # True when the driver itself can tell nobody owns it (e.g. its bookkeeping was lost); the
    # sweep removes such things even when their endpoint still exists.
    orphaned: bool = False


def labels_for(
    *,
    installation: str,
    target_id: int,
    endpoint_id: int,
    role: ResourceRole,
    version_id: int | None = None,
    release_number: int | None = None,
) -> dict[str, str]:
    """The labels every started thing carries, as strings."""
    labels = {
        LABEL_INSTALLATION: installation,
        LABEL_TARGET: str(target_id),
        LABEL_ENDPOINT: str(endpoint_id),
        LABEL_ROLE: str(role),
    }
    if version_id is not None:
        labels[LABEL_VERSION] = str(version_id)
    if release_number is not None:
        labels[LABEL_RELEASE] = str(release_number)
    return labels


class TargetDriver(abc.ABC):
    """Talks to one target; the only code that touches processes, engines or clusters.

    A driver instance is cheap, made per reconcile run by ``driver_for(target)``, and holds no
    state between runs that the target itself does not hold.
    """

    kind: ClassVar[str]

    def __init__(self, target: Target) -> None:
        self.target = target

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """Check and normalise a target's ``config``; raise ApplicationError on bad values."""
        if config:
            raise ApplicationError(
                f"A {cls.kind} target takes no settings.", {"config": sorted(config)}
            )
        return {}

    @classmethod
    def refuse_unknown_settings(cls, config: dict[str, Any], known: set[str]) -> None:
        """ApplicationError naming every key of ``config`` that is not one of ``known``."""
        unknown = sorted(set(config) - known)
        if unknown:
            raise ApplicationError(
                f"Unknown {cls.kind} target settings: {', '.join(unknown)}.", {"config": unknown}
            )

    @classmethod
    def credential_references(cls, config: dict[str, Any]) -> list[tuple[str, str, str]]:
        """The credentials a validated ``config`` names, as (setting, "file" | "variable",
        value), so that the target service can hold them to the owning team's scope."""
        return []

    def model_folder(self, *, spec: ServerSpec) -> Path | None:
        """Where the reconciler materializes the version (``model.onnx``) before
        ``ensure_server``; None when the driver ships models another way (images)."""
        return None

    @abc.abstractmethod
    def observe(self, *, endpoint: Endpoint) -> Observation:
        """What runs for the endpoint now: servers (with liveness/readiness) and the gateway."""

    @abc.abstractmethod
    def ensure_server(self, *, endpoint: Endpoint, spec: ServerSpec) -> ServerState:
        """Make a server for ``spec`` exist: start it if missing, restart it if dead.

        Returns without waiting for readiness. Calling it again for a running server is a no-op.
        """

    @abc.abstractmethod
    def ensure_gateway(self, *, endpoint: Endpoint) -> GatewayState:
        """Make the endpoint's gateway exist and return it; its ``url`` stays the same across
        restarts. A new gateway starts with an empty route table (generation 0)."""

    @abc.abstractmethod
    def set_routes(
        self,
        *,
        endpoint: Endpoint,
        gateway: GatewayState,
        routes: list[Route],
        generation: int,
        sticky: dict[str, str] | None = None,
    ) -> None:
        """Replace the gateway's whole route table atomically.

        Raises StaleGeneration when the gateway holds a newer generation; setting the same
        generation again with the same routes is harmless.
        """

    @abc.abstractmethod
    def remove_server(self, *, server: ServerState) -> None:
        """Stop a server gracefully (in-flight requests finish), then forcibly. Idempotent."""

    def remove_replicas(self, *, endpoint: Endpoint, server: ServerState, keep: int) -> None:
        """Stop the replicas of ``server`` whose index is ``keep`` or higher (a scale-down,
        after the gateway switched away from them). Drivers that do not list ``instances``
        scale in ``ensure_server`` and need nothing here."""
        return None

    @abc.abstractmethod
    def remove_gateway(self, *, gateway: GatewayState) -> None:
        """Stop the endpoint's gateway. Idempotent."""

    @abc.abstractmethod
    def list_owned(self) -> list[OwnedResource]:
        """Everything this driver started on this target, for every endpoint (orphan sweep)."""

    @abc.abstractmethod
    def remove_owned(self, *, resource: OwnedResource) -> None:
        """Remove one thing returned by ``list_owned``. Idempotent."""


def installation_id() -> str:
    """A short id of this Modeldeck installation, so two installations sharing a Docker host or
    a machine never mistake each other's processes or containers for their own."""
    import hashlib
    import hmac

    from django.conf import settings

    message = f"modeldeck-installation:{settings.RUNTIME_DIR}".encode()
    return hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).hexdigest()[:16]


_BASE_URL = re.compile(r"^https?://[A-Za-z0-9.:\[\]-]{1,253}(/[A-Za-z0-9._~/-]{0,200})?$")


def dashboard_base_url(value: Any) -> str | None:
    """`value` as the base URL of the dashboard that gateways post to (http(s), a host, a valid
    port, no credentials, query, fragment or whitespace), without a trailing slash; None when
    it is not one."""
    try:
        parts = urlsplit(value) if isinstance(value, str) and _BASE_URL.fullmatch(value) else None
        port_is_valid = parts is not None and (parts.port is None or parts.port > 0)
    except ValueError:
        return None
    if parts is None or not parts.hostname or not port_is_valid:
        return None
    return value.rstrip("/")
