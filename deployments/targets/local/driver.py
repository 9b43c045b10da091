"""The embedded default target: version servers and gateways as processes on this machine.

Every process is started detached (its own session, so a killed worker does not take it down)
from an argv list, listens on 127.0.0.1 on a port from LOCAL_TARGET_PORT_RANGE, and carries a
marker on its command line
(``python -X modeldeck.process=<installation>.<target>.<endpoint>.<random>``).
A LocalProcess row reserves the port and records the marker *before* the process starts, so a
worker killed at any point leaves either a row whose process is found again by its marker (pid +
command line check), or a row with no process (restarted or removed by the next run).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from common.errors import ApplicationError
from deployments.models import Endpoint, LocalProcess, LocalProcessRole
from deployments.targets.base import (
    DriverError,
    GatewayState,
    Observation,
    OwnedResource,
    Replica,
    ResourceRole,
    ServerSpec,
    ServerState,
    TargetDriver,
    installation_id,
    labels_for,
)
from deployments.targets.gateway import AdminApiRoutes, gateway_read_routes, http_ready
from deployments.targets.serving import SERVING_KEYS, SERVING_LIMITS, serving_arguments

MARKER_OPTION = "modeldeck.process="
GATEWAY_KEY = "gateway"
LISTEN_HOST = "127.0.0.1"
# How long a stopping process may finish in-flight requests before SIGKILL.
STOP_GRACE_SECONDS = 10.0
LOG_TAIL_BYTES = 4000
LOG_TAIL_LINES = 2
LOG_TAIL_CHARS = 600
MAX_LOG_BYTES = 10 * 1024 * 1024

# Children started by this worker, kept so they are reaped (no zombies) when they exit.
_children: dict[int, subprocess.Popen] = {}


def _reap() -> None:
    for pid, child in list(_children.items()):
        if child.poll() is not None:
            _children.pop(pid, None)


def _host() -> str:
    return socket.gethostname()[:255]


def port_range() -> range:
    """LOCAL_TARGET_PORT_RANGE ("low-high") as a range."""
    text = str(settings.LOCAL_TARGET_PORT_RANGE)
    try:
        low, high = (int(part) for part in text.split("-", 1))
    except ValueError:
        raise DriverError(f"LOCAL_TARGET_PORT_RANGE {text!r} is not 'low-high'.") from None
    if not 1024 <= low <= high <= 65535:
        raise DriverError(f"LOCAL_TARGET_PORT_RANGE {text!r} is outside 1024-65535.")
    return range(low, high + 1)


def port_is_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:port (bound the way uvicorn binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LISTEN_HOST, port))
        except OSError:
            return False
    return True


def process_command_line(pid: int) -> list[str] | None:
    """A live process's argv, or None when it is gone (or a zombie)."""
    proc = Path(f"/proc/{pid}/cmdline")
    if Path("/proc/self").exists():
        try:
            raw = proc.read_bytes()
        except OSError:
            return None
        return [part.decode(errors="replace") for part in raw.split(b"\0") if part] or None
    try:  # other Unixes: ask ps, with an argv list
        output = subprocess.run(
            ["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return output.split() or None


def marker_of(command_line: list[str] | None) -> str | None:
    """The Modeldeck marker on a command line, if any."""
    for argument in command_line or ():
        if argument.startswith(MARKER_OPTION):
            return argument[len(MARKER_OPTION) :]
    return None


def scan_markers(prefix: str) -> dict[str, int]:
    """marker -> pid of every live process whose marker starts with `prefix` (Linux /proc)."""
    found: dict[str, int] = {}
    proc = Path("/proc")
    if not (proc / "self").exists():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        marker = marker_of(process_command_line(int(entry.name)))
        if marker is not None and marker.startswith(prefix):
            found[marker] = int(entry.name)
    return found


def prediction_log_url(endpoint: Endpoint) -> str:
    """Where this machine's gateway ships its prediction log ("" when MODELDECK_INTERNAL_URL
    is empty, which turns the log off)."""
    base = str(settings.MODELDECK_INTERNAL_URL or "").rstrip("/")
    return f"{base}/api/v1/endpoints/{endpoint.name}/predictions/" if base else ""


# The only variables of the worker's environment a serving process inherits: what a Python
# process needs to start and find its libraries. Everything else (other teams' target
# credentials, METRICS_TOKEN, the mail password, SECRET_KEY...) would be readable in
# /proc/<pid>/environ by anyone who can run code in the model's process.
RUNTIME_ENVIRONMENT = {
    "PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV",
    "LD_LIBRARY_PATH", "OMP_NUM_THREADS", "MODELDECK_HTTP", "MODELDECK_LOG_LEVEL",
}  # fmt: skip


def _runtime_environment() -> dict[str, str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key in RUNTIME_ENVIRONMENT or key.startswith("LC_")
    }
    if importlib.util.find_spec("modeldeck_runtime") is None:
        runtime = Path(settings.BASE_DIR) / "runtime"
        environment["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(runtime), environment.get("PYTHONPATH", "")])
        )
    return environment


class LocalDriver(AdminApiRoutes, TargetDriver):
    """Child processes on 127.0.0.1, tracked by LocalProcess rows and command-line markers."""

    kind = "local"

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """Optional `threads` (onnxruntime intra-op threads per server, 0 = its default) and the
        serving settings (deployments/targets/serving.py)."""
        cls.refuse_unknown_settings(config, {"threads", *SERVING_KEYS})
        for key, (low, high) in {"threads": (0, 64), **SERVING_LIMITS}.items():
            value = config.get(key, low)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ApplicationError(
                    f"{key} must be a whole number from {low} to {high}.", {"config": key}
                )
        cores = os.cpu_count() or 1
        if config.get("workers", 1) > cores:
            # More processes than cores only adds context switches and memory (each loads the
            # model), so it is refused here rather than found out under load.
            raise ApplicationError(
                f"workers must be at most the {cores} cores of this machine "
                f"(got {config['workers']}).",
                {"config": "workers"},
            )
        if "batch_max_delay_us" in config and config.get("batch_max_rows", 0) == 0:
            raise ApplicationError(
                "batch_max_delay_us needs batch_max_rows above 0 (without batching it does "
                "nothing).",
                {"config": "batch_max_delay_us"},
            )
        return {key: config[key] for key in ("threads", *SERVING_KEYS) if key in config}

    # --- paths and identity ---

    @property
    def installation(self) -> str:
        return installation_id()

    def endpoint_folder(self, endpoint_id: int) -> Path:
        return Path(settings.RUNTIME_DIR) / f"endpoint-{endpoint_id}"

    def model_folder(self, *, spec: ServerSpec) -> Path:
        """Where the reconciler materializes the version for its server."""
        return self.endpoint_folder(spec.endpoint_id) / spec.key

    def _marker_prefix(self, endpoint_id: int | None = None) -> str:
        prefix = f"{self.installation}.{self.target.pk}."
        return prefix if endpoint_id is None else f"{prefix}{endpoint_id}."

    def _rows(self):
        return LocalProcess.objects.filter(host=_host(), target_id=self.target.pk)

    # --- observation ---

    def _locate(self, row: LocalProcess) -> int | None:
        """The pid of the row's live process (pid + command-line marker), or None."""
        _reap()
        if row.pid is not None and marker_of(process_command_line(row.pid)) == row.marker:
            return row.pid
        if row.pid in _children and marker_of(_children[row.pid].args) == row.marker:
            # Our own child, not reaped, so alive: in the moment between fork and exec its
            # /proc command line still reads empty, which must not count as an exit (that gave a
            # false restart and a second copy of the model files under load).
            return row.pid
        pid = scan_markers(row.marker).get(row.marker)
        if pid is not None and pid != row.pid:
            # The worker died between starting the process and recording its pid.
            LocalProcess.objects.filter(pk=row.pk).update(pid=pid)
            row.pid = pid
        return pid

    def _log_tail(self, row: LocalProcess) -> str:
        path = self._log_path(row.endpoint_id, row.key)
        try:
            with open(path, "rb") as handle:
                handle.seek(max(0, path.stat().st_size - LOG_TAIL_BYTES))
                lines = handle.read().decode(errors="replace").strip().splitlines()
        except OSError:
            return ""
        # The last lines say why a process exited (a traceback ends with the error).
        return " | ".join(line.strip() for line in lines[-LOG_TAIL_LINES:])[-LOG_TAIL_CHARS:]

    def _log_path(self, endpoint_id: int, key: str) -> Path:
        return self.endpoint_folder(endpoint_id) / f"{key}.log"

    def _replica(self, row: LocalProcess, pid: int | None, endpoint_name: str) -> Replica:
        url = f"http://{LISTEN_HOST}:{row.port}"
        # Ready means *this* endpoint's version answers there: a foreign server that took the
        # port (another installation, a leftover) answers 404 on this path, never 200.
        path = f"/v2/models/{quote(endpoint_name)}/versions/{quote(row.version, safe=':')}/ready"
        ready = pid is not None and http_ready(url + path)
        return Replica(
            index=replica_index(row.key),
            handle=str(row.pk),
            upstream=url,
            alive=pid is not None,
            ready=ready,
            detail="" if pid is not None else self._log_tail(row),
        )

    def _server_state(self, row: LocalProcess, pid: int | None, endpoint_name: str) -> ServerState:
        """One replica's process as a server (used where a single process is probed)."""
        return server_state(row, [self._replica(row, pid, endpoint_name)])

    def _gateway_state(self, row: LocalProcess, pid: int | None, token: str) -> GatewayState:
        url = f"http://{LISTEN_HOST}:{row.port}"
        table = gateway_read_routes(admin_url=url, token=token) if pid is not None else None
        return GatewayState(
            endpoint_id=row.endpoint_id,
            handle=str(row.pk),
            url=url,
            admin_url=url,
            alive=pid is not None,
            ready=table is not None,
            generation=table.get("generation") if table is not None else None,
            detail="" if pid is not None else self._log_tail(row),
        )

    def observe(self, *, endpoint: Endpoint) -> Observation:
        replicas: dict[int, list[tuple[LocalProcess, Replica]]] = {}
        gateway = None
        for row in self._rows().filter(endpoint_id=endpoint.pk):
            pid = self._locate(row)
            if row.role == LocalProcessRole.GATEWAY:
                gateway = self._gateway_state(row, pid, endpoint.gateway_token)
            else:
                replica = self._replica(row, pid, endpoint.name)
                replicas.setdefault(row.version_id or 0, []).append((row, replica))
        servers = []
        for found in replicas.values():
            found.sort(key=lambda pair: pair[1].index)
            servers.append(server_state(found[0][0], [replica for _, replica in found]))
        return Observation(servers=servers, gateway=gateway)

    # --- starting ---

    def _reserve(self, *, endpoint: Endpoint, key: str, role: str, spec: ServerSpec | None):
        """The row for (endpoint, key), creating it with a free port when missing."""
        rows = self._rows().filter(endpoint_id=endpoint.pk, key=key)
        row = rows.first()
        if row is not None:
            return row
        taken = set(LocalProcess.objects.filter(host=_host()).values_list("port", flat=True))
        for port in port_range():
            if port in taken or not port_is_free(port):
                continue
            try:
                with transaction.atomic():
                    return LocalProcess.objects.create(
                        host=_host(),
                        target_id=self.target.pk,
                        endpoint_id=endpoint.pk,
                        key=key,
                        role=role,
                        version_id=spec.version_id if spec else None,
                        version=spec.version if spec else "",
                        release_number=spec.release_number if spec else None,
                        port=port,
                        marker=f"{self._marker_prefix(endpoint.pk)}{uuid.uuid4().hex[:16]}",
                    )
            except IntegrityError:
                row = rows.first()
                if row is not None:  # another run reserved this key meanwhile
                    return row
        raise DriverError(f"No free port left in LOCAL_TARGET_PORT_RANGE {port_range()}.")

    def _spawn(self, row: LocalProcess, arguments: list[str], environment: dict[str, str]) -> int:
        """Start the row's process detached; returns its pid."""
        if not port_is_free(row.port):
            # Something else took the port while the process was down: move to another one.
            taken = set(LocalProcess.objects.filter(host=_host()).values_list("port", flat=True))
            free = next((p for p in port_range() if p not in taken and port_is_free(p)), None)
            if free is None:
                raise DriverError("No free port left in LOCAL_TARGET_PORT_RANGE.")
            try:
                LocalProcess.objects.filter(pk=row.pk).update(port=free)
            except IntegrityError:
                raise DriverError("Another run took the same port; the next run retries.") from None
            row.port = free
        argv = [
            sys.executable,
            "-X",
            f"{MARKER_OPTION}{row.marker}",
            "-m",
            "modeldeck_runtime",
            *arguments,
            "--host",
            LISTEN_HOST,
            "--port",
            str(row.port),
        ]
        log_path = self._log_path(row.endpoint_id, row.key)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            if log_path.stat().st_size > MAX_LOG_BYTES:  # keep one older log, not an endless one
                os.replace(log_path, log_path.with_suffix(".log.1"))
        with open(log_path, "ab") as log:
            try:
                child = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=environment,
                    cwd=str(log_path.parent),
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as error:
                raise DriverError(f"Could not start {row.role} {row.key}: {error}") from None
        _children[child.pid] = child
        restarted = row.started_at is not None
        LocalProcess.objects.filter(pk=row.pk).update(
            pid=child.pid,
            started_at=timezone.now(),
            restarts=row.restarts + (1 if restarted else 0),
        )
        row.pid = child.pid
        return child.pid

    def _environment(self, endpoint: Endpoint, row: LocalProcess) -> dict[str, str]:
        environment = _runtime_environment()
        labels = labels_for(
            installation=self.installation,
            target_id=self.target.pk,
            endpoint_id=endpoint.pk,
            role=ResourceRole(row.role),
            version_id=row.version_id,
            release_number=row.release_number,
        )
        for key, value in labels.items():
            environment["MODELDECK_LABEL_" + key.split(".", 1)[1].upper()] = value
        return environment

    def ensure_server(self, *, endpoint: Endpoint, spec: ServerSpec) -> ServerState:
        """Make replicas 0 .. spec.replicas-1 run (one process each); replicas above are left
        to `remove_replicas`, which the reconciler calls once the gateway no longer uses them."""
        rows, found = [], []
        for index in range(max(1, spec.replicas)):
            row, pid = self._ensure_replica(endpoint=endpoint, spec=spec, index=index)
            rows.append(row)
            found.append(self._replica(row, pid, endpoint.name))
        return server_state(rows[0], found)

    def _ensure_replica(self, *, endpoint: Endpoint, spec: ServerSpec, index: int):
        row = self._reserve(
            endpoint=endpoint, key=replica_key(spec.key, index), role=LocalProcessRole.SERVER,
            spec=spec,
        )  # fmt: skip
        pid = self._locate(row)
        if pid is None:
            folder = self.model_folder(spec=spec)
            if not (folder / "model.onnx").is_file():
                raise DriverError(f"{spec.version} is not materialized in {folder}.")
            if row.release_number != spec.release_number:
                LocalProcess.objects.filter(pk=row.pk).update(release_number=spec.release_number)
                row.release_number = spec.release_number
            arguments = [
                "serve",
                "--model-dir", str(folder),
                "--model-name", endpoint.name,
                "--model-version", spec.version,
                "--variant", spec.role,
                "--endpoint", endpoint.name,
                "--threads", str(self.target.config.get("threads", 0)),
                *serving_arguments(
                    self.target.config.get("workers", 1),
                    self.target.config.get("batch_max_rows", 0),
                    self.target.config.get("batch_max_delay_us"),
                ),
                "--memory-limit-mb", str(max(2048, (folder / "model.onnx").stat().st_size >> 18)),
                "--drain-seconds", str(int(STOP_GRACE_SECONDS) - 2),
            ]  # fmt: skip
            pid = self._spawn(row, arguments, self._environment(endpoint, row))
        return row, pid

    def ensure_gateway(self, *, endpoint: Endpoint) -> GatewayState:
        row = self._reserve(
            endpoint=endpoint, key=GATEWAY_KEY, role=LocalProcessRole.GATEWAY, spec=None
        )
        pid = self._locate(row)
        if pid is None:
            folder = self.endpoint_folder(endpoint.pk)
            folder.mkdir(parents=True, exist_ok=True)
            environment = self._environment(endpoint, row)
            # The admin token travels in the environment: a command line is visible to everyone.
            environment["MODELDECK_GATEWAY_ADMIN_TOKEN"] = endpoint.gateway_token
            # The prediction log ships to the dashboard, authenticated by the same token.
            log_url = prediction_log_url(endpoint)
            if log_url:
                environment["MODELDECK_GATEWAY_PREDICTION_LOG_URL"] = log_url
            arguments = [
                "gateway",
                "--endpoint", endpoint.name,
                "--state-file", str(folder / "gateway-routes.json"),
                "--drain-seconds", str(int(STOP_GRACE_SECONDS) - 2),
            ]  # fmt: skip
            pid = self._spawn(row, arguments, environment)
        return self._gateway_state(row, pid, endpoint.gateway_token)

    # --- stopping ---

    def _stop(self, row: LocalProcess) -> None:
        """SIGTERM the row's process group, SIGKILL after the grace period, forget the row."""
        pid = self._locate(row)
        if pid is not None:
            stop_process(pid, row.marker)
        LocalProcess.objects.filter(pk=row.pk).delete()
        if row.role == LocalProcessRole.SERVER:
            shutil.rmtree(self.endpoint_folder(row.endpoint_id) / row.key, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                (self.endpoint_folder(row.endpoint_id) / "gateway-routes.json").unlink()
        if not self._rows().filter(endpoint_id=row.endpoint_id).exists():
            shutil.rmtree(self.endpoint_folder(row.endpoint_id), ignore_errors=True)

    def remove_server(self, *, server: ServerState) -> None:
        row = self._rows().filter(pk=int(server.handle)).first()
        if row is None:
            return
        # Every replica of the version; the first one last, since it owns the model folder.
        rows = self._rows().filter(
            endpoint_id=row.endpoint_id, version_id=row.version_id, role=LocalProcessRole.SERVER
        )
        for replica in sorted(rows, key=lambda other: -replica_index(other.key)):
            self._stop(replica)

    def remove_replicas(self, *, endpoint: Endpoint, server: ServerState, keep: int) -> None:
        surplus = [replica for replica in server.instances if replica.index >= keep]
        for replica in sorted(surplus, key=lambda replica: -replica.index):
            row = self._rows().filter(pk=int(replica.handle)).first()
            if row is not None:
                self._stop(row)

    def remove_gateway(self, *, gateway: GatewayState) -> None:
        row = self._rows().filter(pk=int(gateway.handle)).first()
        if row is not None:
            self._stop(row)

    def list_owned(self) -> list[OwnedResource]:
        # Scan before reading rows: a row is written before its process starts, so any process
        # found here that has no row below truly has none (not one started a moment ago).
        running = scan_markers(self._marker_prefix())
        owned = []
        markers = set()
        for row in self._rows():
            markers.add(row.marker)
            owned.append(
                OwnedResource(
                    role=ResourceRole(row.role),
                    handle=f"row:{row.pk}",
                    endpoint_id=row.endpoint_id,
                    version_id=row.version_id,
                    release_number=row.release_number,
                    detail=f"port {row.port}",
                )
            )
        for marker, pid in running.items():
            if marker in markers:
                continue
            # A process of ours that no row knows (its row was lost): it has no owner.
            endpoint_part = marker[len(self._marker_prefix()) :].split(".", 1)[0]
            owned.append(
                OwnedResource(
                    role=ResourceRole.SERVER,
                    handle=f"pid:{pid}:{marker}",
                    endpoint_id=int(endpoint_part) if endpoint_part.isdigit() else None,
                    detail="untracked process",
                    orphaned=True,
                )
            )
        return owned

    def remove_owned(self, *, resource: OwnedResource) -> None:
        kind, _, rest = resource.handle.partition(":")
        if kind == "row":
            row = self._rows().filter(pk=int(rest)).first()
            if row is not None:
                self._stop(row)
        elif kind == "pid":
            pid_text, _, marker = rest.partition(":")
            stop_process(int(pid_text), marker)


def replica_key(key: str, index: int) -> str:
    """The LocalProcess key of one replica: the server key for the first, "v12-r2" after."""
    return key if index == 0 else f"{key}-r{index}"


def replica_index(key: str) -> int:
    """The replica index a LocalProcess key names (0 for the plain server key)."""
    _, marker, number = key.rpartition("-r")
    return int(number) if marker and number.isdigit() else 0


def server_state(first: LocalProcess, replicas: list[Replica]) -> ServerState:
    """A version server made of its replicas (sorted by index), named by the first one's row."""
    ready = [replica for replica in replicas if replica.ready]
    return ServerState(
        endpoint_id=first.endpoint_id,
        version_id=first.version_id or 0,
        version=first.version,
        release_number=first.release_number or 0,
        handle=str(first.pk),
        upstream=replicas[0].upstream,
        alive=any(replica.alive for replica in replicas),
        ready=len(ready) == len(replicas),
        ready_replicas=len(ready),
        desired_replicas=len(replicas),
        upstreams=tuple(replica.upstream for replica in ready),
        detail=next((replica.detail for replica in replicas if replica.detail), ""),
        instances=tuple(replicas),
    )


def stop_process(pid: int, marker: str) -> None:
    """SIGTERM a marked process's group, then SIGKILL after the grace period; never touches a
    process whose command line does not carry `marker` (the pid may have been reused)."""

    def running() -> bool:
        _reap()
        return marker_of(process_command_line(pid)) == marker

    if not running():
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while time.monotonic() < deadline:
        if not running():
            return
        time.sleep(0.05)
    if running():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        child = _children.pop(pid, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=5)
