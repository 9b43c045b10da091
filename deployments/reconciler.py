"""The reconciler: make what runs for an endpoint match its desired release.

Level-triggered: each run reads the desired release, asks the target's driver what runs, starts
what is missing (after materializing the version), waits for readiness (bounded), switches the
gateway's whole route table in one step fenced by the endpoint generation, drains and removes
what is no longer wanted, and records progress as DeploymentEvents and the endpoint status.

Safety:
- one run per endpoint at a time: a lease row (`ReconcileLease`) with an expiry, which a run on
  this host may take over at once when its holder process is dead;
- fencing: the endpoint generation is read at the start; before the route switch and before
  removing anything the run re-reads it and stops when a newer release was written, and the
  gateway itself refuses a generation older than the one it holds;
- idempotence: a run that finds everything converged changes nothing; every step is "ensure",
  so a run killed at any step is completed by the next one.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone

from deployments.models import (
    Endpoint,
    EndpointStatus,
    EventLevel,
    ReconcileLease,
    Release,
    TargetKind,
    VariantRole,
)
from deployments.services import deployment_event_record
from deployments.targets import driver_for
from deployments.targets.base import (
    DriverError,
    Observation,
    Route,
    ServerSpec,
    StaleGeneration,
    TargetDriver,
)
from registry.models import ModelVersion
from registry.storage import materialize_version

logger = logging.getLogger(__name__)

# The named steps of a run, in order; PAUSE_ENVIRONMENT can hold a run at one of them.
STEPS = (
    "observed", "server-started", "servers-ready", "gateway-ready", "routes-set", "drained",
    "converged",
)  # fmt: skip
# Fault injection for tests: a run pauses at the named step after writing the pause file, and
# goes on when the file is deleted, so a test can SIGKILL it there or let a newer release
# overtake it. Unset in every real deployment.
PAUSE_ENVIRONMENT = "MODELDECK_RECONCILE_PAUSE_AT"
PAUSE_FILE_ENVIRONMENT = "MODELDECK_RECONCILE_PAUSE_FILE"


def _setting(name: str, default: float) -> float:
    return float(getattr(settings, name, default))


def ready_timeout_seconds() -> float:
    """How long a run waits for new servers (and the gateway) to become ready."""
    return _setting("DEPLOYMENTS_READY_TIMEOUT_SECONDS", 60.0)


def drain_seconds() -> float:
    """How long a server keeps running after the gateway switched away from it."""
    return _setting("DEPLOYMENTS_DRAIN_SECONDS", 2.0)


def lease_seconds() -> float:
    """How long a run's hold on an endpoint lasts without renewal."""
    return _setting("DEPLOYMENTS_LEASE_SECONDS", 60.0)


def _checkpoint(step: str) -> None:
    if not os.environ.get(PAUSE_ENVIRONMENT) or os.environ[PAUSE_ENVIRONMENT] != step:
        return
    pause_file = Path(os.environ[PAUSE_FILE_ENVIRONMENT])
    pause_file.write_text(step)
    while pause_file.exists():
        time.sleep(0.05)


# --- the per-endpoint lease -------------------------------------------------------------------


def new_holder() -> str:
    """A lease holder name: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _holder_is_dead(holder: str) -> bool:
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    if int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(int(pid_text))


def _is_zombie(pid: int) -> bool:
    """Killed but not reaped yet: a worker's pool process whose main process died with it stays
    a zombie until init gets to it (seconds under some inits), and runs nothing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def lease_acquire(*, endpoint_id: int, holder: str) -> bool:
    """Take the endpoint's lease; False when another live run holds it."""
    now = timezone.now()
    expires = now + timedelta(seconds=lease_seconds())
    leases = ReconcileLease.objects.filter(endpoint_id=endpoint_id)
    if leases.filter(expires_at__lt=now).update(holder=holder, expires_at=expires):
        return True
    try:
        with transaction.atomic():
            ReconcileLease.objects.create(
                endpoint_id=endpoint_id, holder=holder, expires_at=expires
            )
        return True
    except IntegrityError:
        pass
    current = leases.values_list("holder", flat=True).first()
    if current is not None and _holder_is_dead(current):
        # The run that held it was killed on this host; no need to wait for the expiry.
        return bool(leases.filter(holder=current).update(holder=holder, expires_at=expires))
    return False


def lease_renew(*, endpoint_id: int, holder: str) -> bool:
    """Extend a held lease; False when it was lost (expired and taken)."""
    expires = timezone.now() + timedelta(seconds=lease_seconds())
    return bool(
        ReconcileLease.objects.filter(endpoint_id=endpoint_id, holder=holder).update(
            expires_at=expires
        )
    )


def lease_release(*, endpoint_id: int, holder: str) -> None:
    """Give the lease back."""
    ReconcileLease.objects.filter(endpoint_id=endpoint_id, holder=holder).delete()


def _lease_release_after_run(*, endpoint_id: int, holder: str) -> None:
    """Give the lease back even when the run's connection died (a database restart): on a new
    connection, so the next run does not find the endpoint "busy" until the lease expires."""
    try:
        lease_release(endpoint_id=endpoint_id, holder=holder)
        return
    except DatabaseError:
        connection.close()
    try:
        lease_release(endpoint_id=endpoint_id, holder=holder)
    except DatabaseError:
        logger.warning("could not give back the lease of endpoint %s; it expires", endpoint_id)


# --- the run ----------------------------------------------------------------------------------


class Stale(Exception):
    """A newer release was written (or the lease was lost) while this run worked."""


@dataclass
class _Run:
    """One reconcile run of one endpoint, fenced by the generation it started on."""

    endpoint: Endpoint
    release: Release
    generation: int
    holder: str
    driver: TargetDriver | None

    # -- bookkeeping --

    def event(self, message: str, *, level: str = EventLevel.INFO, **data) -> None:
        deployment_event_record(
            endpoint=self.endpoint,
            release=self.release,
            message=message,
            level=level,
            data={"generation": self.generation, **data},
        )

    def current(self) -> bool:
        """Whether this run still holds the lease and the endpoint still wants its release."""
        if not lease_renew(endpoint_id=self.endpoint.pk, holder=self.holder):
            return False
        return Endpoint.objects.filter(pk=self.endpoint.pk, generation=self.generation).exists()

    def require_current(self) -> None:
        if not self.current():
            raise Stale

    def set_status(self, status: str, reason: str = "", **fields) -> None:
        """Compare-and-set on the generation: a stale run writes nothing."""
        updated = Endpoint.objects.filter(pk=self.endpoint.pk, generation=self.generation).update(
            status=status, status_reason=reason[:2000], updated_at=timezone.now(), **fields
        )
        if not updated:
            raise Stale

    # -- desired state --

    def specs(self) -> list[ServerSpec]:
        specs = []
        versions = ModelVersion.objects.select_related("model").in_bulk(
            [variant["version_id"] for variant in self.release.variants]
        )
        for variant in self.release.variants:
            version = versions.get(variant["version_id"])
            if version is None:
                raise DriverError(f"{variant['version']} no longer exists.")
            specs.append(
                ServerSpec(
                    endpoint_id=self.endpoint.pk,
                    endpoint_name=self.endpoint.name,
                    version_id=version.pk,
                    version=version.reference,
                    model_name=version.model.name,
                    version_number=version.number,
                    release_number=self.release.number,
                    role=variant["role"],
                    replicas=self.release.replicas,
                )
            )
        return specs

    def routes(self, observation: Observation) -> list[Route]:
        routes = []
        for variant in self.release.variants:
            server = observation.server(f"v{variant['version_id']}")
            assert server is not None
            shadow = variant["role"] == VariantRole.SHADOW
            routes.append(
                Route(
                    version=variant["version"],
                    version_id=variant["version_id"],
                    upstream=server.upstream,
                    weight=0 if shadow else variant["weight"],
                    role=variant["role"],
                    mirror_percent=variant.get("mirror_percent", 0) if shadow else 0,
                )
            )
        return routes

    def converged(self, observation: Observation, specs: list[ServerSpec]) -> bool:
        """Everything runs, is ready, the gateway holds this generation, and it was recorded."""
        wanted = {spec.key for spec in specs}
        if {server.key for server in observation.servers} != wanted:
            return False
        if not all(server.alive and server.ready for server in observation.servers):
            return False
        gateway = observation.gateway
        if gateway is None or not gateway.ready or gateway.generation != self.generation:
            return False
        endpoint = self.endpoint
        return (
            endpoint.status == EndpointStatus.LIVE
            and endpoint.live_release_id == self.release.pk
            and endpoint.url == gateway.url
            and self.release.live_at is not None
        )

    # -- steps --

    def run(self) -> str:
        observation = self.driver.observe(endpoint=self.endpoint)
        _checkpoint("observed")
        if self.release.is_stop:
            return self.stop(observation)
        specs = self.specs()
        if self.converged(observation, specs):
            Endpoint.objects.filter(pk=self.endpoint.pk).update(last_reconciled_at=timezone.now())
            return "unchanged"
        self.set_status(EndpointStatus.PROGRESSING)
        self.event(f"Reconciling release {self.release.number}.")
        for spec in specs:
            server = observation.server(spec.key)
            if server is not None and server.alive:
                continue
            self.start_server(spec, restarted=server is not None)
            _checkpoint("server-started")
        observation = self.wait_servers_ready(specs)
        _checkpoint("servers-ready")
        gateway = self.wait_gateway_ready()
        _checkpoint("gateway-ready")
        self.require_current()
        routes = self.routes(observation)
        self.driver.set_routes(
            endpoint=self.endpoint,
            gateway=gateway,
            routes=routes,
            generation=self.generation,
            sticky=self.release.sticky,
        )
        self.event(f"Traffic switched: {_describe(routes)}.")
        _checkpoint("routes-set")
        wanted = {spec.key for spec in specs}
        unwanted = [server for server in observation.servers if server.key not in wanted]
        if unwanted:
            # Requests that picked an old route just before the switch finish first.
            time.sleep(drain_seconds())
            self.require_current()
            for server in unwanted:
                self.driver.remove_server(server=server)
                self.event(f"Stopped the server of {server.version}.")
        _checkpoint("drained")
        now = timezone.now()
        self.set_status(
            EndpointStatus.LIVE,
            live_release=self.release,
            url=gateway.url,
            last_reconciled_at=now,
        )
        went_live = Release.objects.filter(pk=self.release.pk, live_at__isnull=True).update(
            live_at=now
        )
        self.event(f"Release {self.release.number} is live.")
        if went_live:
            from monitoring.services import webhook_emit  # monitoring's models refer to ours

            webhook_emit(
                team=self.endpoint.team_id,
                event="release.live",
                payload={
                    "endpoint": self.endpoint.name,
                    "release": self.release.number,
                    "url": gateway.url,
                    "variants": self.release.variants,
                },
            )
        _checkpoint("converged")
        return "converged"

    def start_server(self, spec: ServerSpec, *, restarted: bool) -> None:
        folder = self.driver.model_folder(spec=spec)
        if folder is not None:
            try:
                materialize_version(ModelVersion.objects.get(pk=spec.version_id), folder)
            except (OSError, ObjectDoesNotExist) as error:
                raise DriverError(f"Could not lay out {spec.version}: {error}") from None
        self.require_current()
        self.driver.ensure_server(endpoint=self.endpoint, spec=spec)
        if self.endpoint.target.kind == TargetKind.EDGE:
            # No server runs here: the fleet's devices pull the version wave by wave.
            self.event(f"Rolling {spec.version} out to the fleet.", version=spec.version)
            return
        verb = "Restarted" if restarted else "Started"
        self.event(f"{verb} a server for {spec.version}.", version=spec.version)

    def wait_servers_ready(self, specs: list[ServerSpec]) -> Observation:
        deadline = time.monotonic() + ready_timeout_seconds()
        restarts: dict[str, int] = {}
        while True:
            observation = self.driver.observe(endpoint=self.endpoint)
            waiting = []
            for spec in specs:
                server = observation.server(spec.key)
                if server is not None and server.ready:
                    continue
                waiting.append(spec)
                if server is None or not server.alive:
                    if restarts.get(spec.key, 0) >= 1:
                        detail = server.detail if server is not None else ""
                        raise DriverError(
                            f"The server of {spec.version} exited while starting. {detail}".strip()
                        )
                    restarts[spec.key] = restarts.get(spec.key, 0) + 1
                    self.start_server(spec, restarted=True)
            if not waiting:
                return observation
            if time.monotonic() > deadline:
                names = ", ".join(spec.version for spec in waiting)
                raise DriverError(
                    f"{names} did not become ready within {ready_timeout_seconds():g} seconds."
                )
            self.require_current()
            time.sleep(0.1)

    def wait_gateway_ready(self):
        deadline = time.monotonic() + ready_timeout_seconds()
        gateway = self.driver.ensure_gateway(endpoint=self.endpoint)
        restarted = False
        while not gateway.ready:
            if time.monotonic() > deadline:
                raise DriverError(
                    f"The gateway did not become ready within {ready_timeout_seconds():g} "
                    f"seconds. {gateway.detail}".strip()
                )
            self.require_current()
            time.sleep(0.1)
            gateway = self.driver.observe(endpoint=self.endpoint).gateway
            if gateway is None or not gateway.alive:
                if restarted:
                    detail = gateway.detail if gateway is not None else ""
                    raise DriverError(f"The gateway exited while starting. {detail}".strip())
                restarted = True
                gateway = self.driver.ensure_gateway(endpoint=self.endpoint)
        return gateway

    def stop(self, observation: Observation) -> str:
        endpoint = self.endpoint
        if (
            not observation.servers
            and observation.gateway is None
            and endpoint.status == EndpointStatus.STOPPED
        ):
            return "unchanged"
        self.set_status(EndpointStatus.PROGRESSING)
        self.require_current()
        if observation.gateway is not None:
            self.driver.remove_gateway(gateway=observation.gateway)
            self.event("Stopped the gateway.")
        for server in observation.servers:
            self.driver.remove_server(server=server)
            self.event(f"Stopped the server of {server.version}.")
        _checkpoint("drained")
        self.set_status(EndpointStatus.STOPPED, url="", last_reconciled_at=timezone.now())
        Release.objects.filter(pk=self.release.pk, live_at__isnull=True).update(
            live_at=timezone.now()
        )
        self.event("The endpoint is stopped.")
        return "stopped"

    def fail(self, reason: str) -> None:
        """Record a failure: degraded while an earlier release still serves, else failed."""
        endpoint = Endpoint.objects.filter(pk=self.endpoint.pk).first()
        serving = endpoint is not None and endpoint.live_release_id is not None
        if serving and endpoint.live_release_id != self.release.pk:
            status = EndpointStatus.DEGRADED
            message = (
                f"Release {self.release.number} failed (release "
                f"{endpoint.live_release.number} still serves): {reason}"
            )
        else:
            status = EndpointStatus.FAILED
            message = f"Release {self.release.number} failed: {reason}"
        try:
            self.set_status(status, message, last_reconciled_at=timezone.now())
        except Stale:
            return
        self.event(message, level=EventLevel.ERROR)


def _describe(routes: list[Route]) -> str:
    parts = []
    for route in routes:
        if route.role == VariantRole.SHADOW:
            parts.append(f"{route.version} mirrors {route.mirror_percent} %")
        else:
            parts.append(f"{route.version} {route.weight} %")
    return ", ".join(parts) or "no routes"


def reconcile_endpoint(*, endpoint_id: int) -> str:
    """Converge one endpoint; returns what happened ("converged", "unchanged", "stopped",
    "failed", "stale", "busy", "gone")."""
    holder = new_holder()
    if not Endpoint.objects.filter(pk=endpoint_id).exists():
        return "gone"
    if not lease_acquire(endpoint_id=endpoint_id, holder=holder):
        return "busy"
    try:
        endpoint = (
            Endpoint.objects.select_related("target", "desired_release", "live_release")
            .filter(pk=endpoint_id)
            .first()
        )
        if endpoint is None:
            return "gone"
        if endpoint.desired_release is None:
            return "unchanged"
        try:
            driver = driver_for(endpoint.target)
        except DriverError as error:
            run = _Run(endpoint, endpoint.desired_release, endpoint.generation, holder, None)
            run.fail(str(error))
            return "failed"
        run = _Run(endpoint, endpoint.desired_release, endpoint.generation, holder, driver)
        try:
            return run.run()
        except (Stale, StaleGeneration):
            logger.info("reconcile of endpoint %s stopped: a newer release exists", endpoint_id)
            return "stale"
        except DriverError as error:
            run.fail(str(error))
            return "failed"
    finally:
        _lease_release_after_run(endpoint_id=endpoint_id, holder=holder)


def sweep_target(*, target) -> int:
    """Remove what a target's driver owns that no endpoint owns; returns how many."""
    try:
        driver = driver_for(target)
    except DriverError:
        return 0
    endpoint_ids = set(Endpoint.objects.filter(target=target).values_list("pk", flat=True))
    removed = 0
    for resource in driver.list_owned():
        if resource.orphaned or resource.endpoint_id not in endpoint_ids:
            logger.warning("removing orphan %s on target %s", resource, target)
            driver.remove_owned(resource=resource)
            removed += 1
    return removed
