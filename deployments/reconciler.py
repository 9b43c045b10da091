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
from datetime import datetime, timedelta
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
    ReleaseReason,
    TargetKind,
    VariantRole,
)
from deployments.services import deployment_event_record, rollback_default
from deployments.targets import driver_for
from deployments.targets.base import (
    DriverError,
    Observation,
    Route,
    ServerSpec,
    ServerState,
    StaleGeneration,
    TargetDriver,
)
from events.models import EventKind
from events.services import event_record
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


def ready_timeout_seconds() -> float:
    """How long a run waits for new servers (and the gateway) to become ready."""
    return float(settings.DEPLOYMENTS_READY_TIMEOUT_SECONDS)


def drain_seconds() -> float:
    """How long a server keeps running after the gateway switched away from it."""
    return float(settings.DEPLOYMENTS_DRAIN_SECONDS)


def warm_seconds() -> float:
    """How long the servers of the release a new one replaced keep running (so that a rollback
    inside the window is a route switch, no server start); like Argo Rollouts'
    scaleDownDelaySeconds."""
    return float(settings.DEPLOYMENTS_WARM_SECONDS)


def warm_window(endpoint: Endpoint) -> tuple[set[int], datetime | None]:
    """The versions kept warm for a rollback (the last live release's versions that the desired
    release no longer serves) and until when; (empty, None) when there is no window.

    The window starts when the desired release went live (servers are kept while it is still
    starting, too) and lasts `DEPLOYMENTS_WARM_SECONDS`.
    """
    release = endpoint.desired_release
    seconds = warm_seconds()
    if release is None or release.reason == ReleaseReason.STOP or seconds <= 0:
        return set(), None
    previous = rollback_default(endpoint)
    if previous is None:
        return set(), None
    versions = {variant["version_id"] for variant in previous.variants}
    versions -= {variant["version_id"] for variant in release.variants}
    if not versions:
        return set(), None
    started = release.live_at or timezone.now()
    return versions, started + timedelta(seconds=seconds)


def lease_seconds() -> float:
    """How long a run's hold on an endpoint lasts without renewal."""
    return float(settings.DEPLOYMENTS_LEASE_SECONDS)


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
                    replicas=variant_replicas(variant),
                    autoscale=variant.get("autoscale"),
                )
            )
        return specs

    def routes(self, observation: Observation) -> list[Route]:
        routes = []
        for variant in self.release.variants:
            server = observation.server(f"v{variant['version_id']}")
            assert server is not None
            upstreams = serving_upstreams(server, variant_replicas(variant))
            shadow = variant["role"] == VariantRole.SHADOW
            routes.append(
                Route(
                    version=variant["version"],
                    version_id=variant["version_id"],
                    upstream=upstreams[0],
                    weight=0 if shadow else variant["weight"],
                    role=variant["role"],
                    mirror_percent=variant.get("mirror_percent", 0) if shadow else 0,
                    upstreams=upstreams,
                )
            )
        return routes

    def warm(self) -> tuple[set[str], datetime | None]:
        """Keys of the servers kept warm for a rollback, and until when."""
        versions, until = warm_window(self.endpoint)
        if until is None or until <= timezone.now():
            return set(), None
        return {f"v{version_id}" for version_id in versions}, until

    def leftovers(self, observation: Observation, specs: list[ServerSpec]):
        """What the gateway no longer needs: (surplus replicas per server, servers to remove).
        Servers of the warm window stay."""
        wanted = {spec.key: spec for spec in specs}
        warm, _ = self.warm()
        surplus = []
        for server in observation.servers:
            spec = wanted.get(server.key)
            if spec is not None and any(r.index >= spec.replicas for r in server.instances):
                surplus.append((server, spec.replicas))
        unwanted = [
            server
            for server in observation.servers
            if server.key not in wanted and server.key not in warm
        ]
        return surplus, unwanted

    def autoscale_changed(self, server: ServerState | None, spec: ServerSpec) -> bool:
        """Whether a server whose platform keeps the count (kubernetes) was last applied with
        another autoscale than the spec's. The observed replica count cannot tell (an autoscaler
        may hold it at the new fixed count, or a fixed count may equal the new minimum): the
        release the server was applied at (its label) says what the platform was told."""
        if server is None or server.instances or server.release_number == self.release.number:
            return False
        applied = (
            Release.objects.filter(endpoint_id=self.endpoint.pk, number=server.release_number)
            .values_list("variants", flat=True)
            .first()
        )
        told = next(
            (v.get("autoscale") for v in applied or [] if v["version_id"] == spec.version_id),
            None,
        )
        return told != spec.autoscale

    def record_replicas(self, observation: Observation, specs: list[ServerSpec]) -> None:
        """Ready / desired replicas per version and the warm window, for the endpoint page."""
        warm, until = self.warm()
        status: dict[str, dict] = {}
        for spec in specs:
            server = observation.server(spec.key)
            status[str(spec.version_id)] = {
                "version": spec.version,
                "ready": ready_replicas(server, spec.replicas),
                "desired": spec.replicas,
                "autoscale": spec.autoscale,
            }
        for server in observation.servers:
            if server.key in warm:
                status[str(server.version_id)] = {
                    "version": server.version,
                    "ready": server.ready_replicas if server.ready else 0,
                    "desired": server.desired_replicas,
                    "warm_until": until.isoformat(),
                }
        if status == self.endpoint.replica_status:
            return  # a converged endpoint's beat run writes nothing
        Endpoint.objects.filter(pk=self.endpoint.pk, generation=self.generation).update(
            replica_status=status
        )
        self.endpoint.replica_status = status

    def converged(
        self, observation: Observation, specs: list[ServerSpec], *, leftovers: bool = False
    ) -> bool:
        """Everything runs, is ready, the gateway holds this generation, and it was recorded;
        with `leftovers`, servers and replicas the gateway no longer routes to may remain."""
        for spec in specs:
            server = observation.server(spec.key)
            if not replicas_serve(server, spec.replicas) or needs_start(server, spec):
                return False
        if not leftovers and any(self.leftovers(observation, specs)):
            return False
        gateway = observation.gateway
        if gateway is None or not gateway.ready or gateway.generation != self.generation:
            return False
        endpoint = self.endpoint
        if endpoint.target.kind in ("local", "docker"):
            # The generation alone proves nothing: whoever rewrote the table may have kept it.
            # Compare what the gateway serves with this release (and the endpoint's keys);
            # imported here so this check stays one self-contained step.
            from deployments.access import access_changed_since, endpoint_access_document
            from deployments.targets.gateway import (
                gateway_read_routes,
                route_table_document,
                same_route_table,
            )

            live = gateway_read_routes(admin_url=gateway.admin_url, token=endpoint.gateway_token)
            expected = route_table_document(
                routes=self.routes(observation),
                generation=self.generation,
                sticky=self.release.sticky,
                access=endpoint_access_document(endpoint),
            )
            if not same_route_table(live, expected):
                without_access = {key: value for key, value in expected.items() if key != "access"}
                if (
                    live is not None
                    and same_route_table({**live, "access": {}}, without_access)
                    and access_changed_since(endpoint, endpoint.last_reconciled_at)
                ):
                    self.event("Sending the endpoint's changed API keys to the gateway.")
                else:
                    self.event(
                        f"The gateway's route table differs from release {self.release.number} "
                        "(changed outside Modeldeck); restoring it.",
                        level=EventLevel.WARNING,
                    )
                return False
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
            self.record_replicas(observation, specs)
            return "unchanged"
        if self.converged(observation, specs, leftovers=True):
            # Serving as wanted; what remains (servers past their warm window, replicas a killed
            # run left behind) gets no traffic at this generation: stop it, change nothing else.
            self.remove_leftovers(observation, specs)
            Endpoint.objects.filter(pk=self.endpoint.pk).update(last_reconciled_at=timezone.now())
            return "converged"
        self.set_status(EndpointStatus.PROGRESSING)
        self.event(f"Reconciling release {self.release.number}.")
        for spec in specs:
            server = observation.server(spec.key)
            if not needs_start(server, spec) and not self.autoscale_changed(server, spec):
                continue
            self.start_server(spec, restarted=server is not None and not server.alive)
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
        self.record_replicas(observation, specs)
        _checkpoint("routes-set")
        self.remove_leftovers(observation, specs)
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
            event_record(
                team=self.endpoint.team_id,
                kind=EventKind.RELEASE_LIVE,
                payload={
                    "endpoint": self.endpoint.name,
                    "release": self.release.number,
                    "url": gateway.url,
                    "variants": self.release.variants,
                },
            )
        _checkpoint("converged")
        return "converged"

    def remove_leftovers(self, observation: Observation, specs: list[ServerSpec]) -> None:
        """Stop the replicas and servers the gateway's table no longer names (after the drain
        time), except those kept warm for a rollback."""
        surplus, unwanted = self.leftovers(observation, specs)
        if not surplus and not unwanted:
            return
        # Requests that picked an old route (or replica) just before the switch finish first;
        # only then do the processes stop.
        time.sleep(drain_seconds())
        self.require_current()
        for server, keep in surplus:
            self.driver.remove_replicas(endpoint=self.endpoint, server=server, keep=keep)
            noun = "replica" if keep == 1 else "replicas"
            self.event(f"Scaled {server.version} down to {keep} {noun}.", version=server.version)
        for server in unwanted:
            self.driver.remove_server(server=server)
            self.event(f"Stopped the server of {server.version}.")
        self.record_replicas(self.driver.observe(endpoint=self.endpoint), specs)

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
        count = f" ({spec.replicas} replicas)" if spec.replicas > 1 else ""
        self.event(f"{verb} a server for {spec.version}{count}.", version=spec.version)

    def wait_servers_ready(self, specs: list[ServerSpec]) -> Observation:
        deadline = time.monotonic() + ready_timeout_seconds()
        restarts: dict[str, int] = {}
        while True:
            observation = self.driver.observe(endpoint=self.endpoint)
            waiting = []
            for spec in specs:
                server = observation.server(spec.key)
                # Traffic moves only once every wanted replica of every version answers.
                if replicas_serve(server, spec.replicas):
                    continue
                waiting.append(spec)
                if is_down(server, spec):
                    if restarts.get(spec.key, 0) >= 1:
                        detail = server.detail if server is not None else ""
                        raise DriverError(
                            f"The server of {spec.version} exited while starting. {detail}".strip()
                        )
                    restarts[spec.key] = restarts.get(spec.key, 0) + 1
                    self.start_server(spec, restarted=True)
            if not waiting:
                return observation
            # The page shows a rollout's progress (and where a failed one stopped).
            self.record_replicas(observation, specs)
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
        self.set_status(
            EndpointStatus.STOPPED, url="", last_reconciled_at=timezone.now(), replica_status={}
        )
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


def variant_replicas(variant: dict) -> int:
    """How many replicas a release variant asks for (autoscale: its minimum)."""
    autoscale = variant.get("autoscale")
    if autoscale:
        return max(1, int(autoscale["min"]))
    return max(1, int(variant.get("replicas") or 1))


def _wanted(server: ServerState, replicas: int) -> list:
    return [replica for replica in server.instances if replica.index < replicas]


def replicas_serve(server: ServerState | None, replicas: int) -> bool:
    """Whether every wanted replica of a version runs and answers."""
    if server is None:
        return False
    if not server.instances:  # the platform keeps the count (kubernetes)
        return server.alive and server.ready and server.ready_replicas >= server.desired_replicas
    wanted = _wanted(server, replicas)
    return len(wanted) == replicas and all(r.alive and r.ready for r in wanted)


def ready_replicas(server: ServerState | None, replicas: int) -> int:
    """How many of the wanted replicas answer."""
    if server is None:
        return 0
    if not server.instances:  # mid-rollout too: the pods the platform counts ready
        return server.ready_replicas if server.alive else 0
    return sum(1 for replica in _wanted(server, replicas) if replica.ready)


def needs_start(server: ServerState | None, spec: ServerSpec) -> bool:
    """Whether `ensure_server` has something to do: a missing or dead server or replica, or a
    replica count the platform was not told yet."""
    if server is None or not server.alive:
        return True
    if not server.instances:
        return spec.autoscale is None and server.desired_replicas != spec.replicas
    wanted = _wanted(server, spec.replicas)
    return len(wanted) < spec.replicas or not all(replica.alive for replica in wanted)


def is_down(server: ServerState | None, spec: ServerSpec) -> bool:
    """Whether the server, or one of its wanted replicas, is missing or has exited."""
    if server is None or not server.alive:
        return True
    wanted = _wanted(server, spec.replicas)
    return bool(server.instances) and (
        len(wanted) < spec.replicas or not all(replica.alive for replica in wanted)
    )


def serving_upstreams(server: ServerState, replicas: int) -> tuple[str, ...]:
    """The base URLs the gateway balances the version's share across."""
    if not server.instances:
        return server.upstreams or (server.upstream,)
    return tuple(replica.upstream for replica in _wanted(server, replicas))


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
