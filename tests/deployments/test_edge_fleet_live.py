"""Edge fleets end to end: real agents (separate processes, own folder and port each) against a
live Modeldeck web server (gunicorn on the test database), real ONNX models, no mocks.

- a rollout goes wave by wave; the server is stopped mid-rollout and restarted; nothing is lost
  (rollout state, device state, and the summaries the agents buffered while it was down);
- a tampered artifact and a tampered manifest are refused, and a replayed older manifest too;
- a version that fails its smoke test rolls back locally and aborts the fleet rollout.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import onnx
import pytest
from django.conf import settings
from django.db import connection
from django.db.models import Sum
from onnx import TensorProto, helper

from accounts.actor import Actor
from deployments import reconciler
from deployments.models import Environment, ReleaseReason, Target, TargetKind
from deployments.services import endpoint_create
from edge import services as edge
from edge.models import DeviceHealth, EdgeDevice, EdgeRollout, RolloutDeviceState, RolloutStatus
from monitoring.models import MetricPoint
from registry.models import ModelVersion
from tests.factories import ModelVersionFactory

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SYSTEM = Actor.system("tests")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def database_url() -> str:
    data = connection.settings_dict
    if data["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{data['NAME']}"
    user = data.get("USER") or "postgres"
    password = f":{data['PASSWORD']}" if data.get("PASSWORD") else ""
    host = data.get("HOST") or "127.0.0.1"
    return f"postgres://{user}{password}@{host}:{data.get('PORT') or 5432}/{data['NAME']}"


class WebServer:
    """gunicorn serving this test's database, artifacts and secret key."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {
            **{k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "DEBUG": "true",
            "DATABASE_URL": database_url(),
            "MODELDECK_VAR_DIR": str(settings.VAR_DIR),
            "ARTIFACT_ROOT": str(settings.ARTIFACT_ROOT),
            "SECRET_KEY": settings.SECRET_KEY,
            "CELERY_BROKER_URL": "memory://",
        }
        log = open(self.folder / "web.log", "ab")  # noqa: SIM115 (the process owns it)
        self.process = subprocess.Popen(
            [str(BIN / "gunicorn"), "config.wsgi", "--bind", f"127.0.0.1:{self.port}",
             "--workers", "1", "--threads", "8", "--graceful-timeout", "5"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

        def up():
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_for(up, 60, "the web server")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None


class AgentProcess:
    """One modeldeck-agent in its own folder, serving on its own port."""

    def __init__(self, folder: Path, name: str, server: str, code: str) -> None:
        self.folder = folder / name
        self.folder.mkdir(parents=True)
        self.name = name
        self.port = free_port()
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DJANGO_", "DATABASE_", "SECRET", "CELERY_"))
        }
        log = open(self.folder / "agent.log", "ab")  # noqa: SIM115 (the process owns it)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "modeldeck_runtime.agent", "run", "--dir", str(self.folder),
             "--server", server, "--code", code, "--name", name, "--port", str(self.port),
             "--poll-seconds", "0.5", "--heartbeat-seconds", "0.7",
             "--max-backoff-seconds", "1.5", "--health-timeout-seconds", "30"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def state(self) -> dict:
        with contextlib.suppress(OSError, ValueError):
            return json.loads((self.folder / "state.json").read_text())
        return {}

    def infer(self, value: float) -> float:
        body = json.dumps(
            {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [value]}]}
        ).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/v2/models/adder/infer",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())["outputs"][0]["data"][0]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)

    def log(self) -> str:
        parts = []
        for name in ("agent.log", "server.log"):
            with contextlib.suppress(OSError):
                parts.append((self.folder / name).read_text(errors="replace")[-3000:])
        return "\n".join(parts)


class TamperingProxy:
    """A man in the middle between one agent and Modeldeck (test equipment): passes requests
    on, or corrupts artifacts, or alters manifests, or replays an older desired state."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.mode = "pass"
        self.recorded: list[bytes] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.forward()

            def do_POST(self):
                self.forward()

            def forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                desired = self.path.startswith("/api/v1/edge/desired/")
                if desired and proxy.mode == "replay" and proxy.recorded:
                    return self.answer(200, {"ETag": '"replayed"'}, proxy.recorded[0])
                request = urllib.request.Request(
                    proxy.upstream + self.path, data=body, method=self.command
                )
                for name in ("Authorization", "Content-Type", "Range"):
                    if self.headers.get(name):
                        request.add_header(name, self.headers[name])
                if self.headers.get("If-None-Match") and proxy.mode == "pass":
                    request.add_header("If-None-Match", self.headers["If-None-Match"])
                try:
                    with urllib.request.urlopen(request, timeout=10) as response:
                        status, headers, content = (
                            response.status, dict(response.headers), response.read()
                        )  # fmt: skip
                except urllib.error.HTTPError as error:
                    status, headers, content = error.code, dict(error.headers), error.read()
                except OSError:
                    return self.answer(502, {}, b"")
                if desired and status == 200:
                    proxy.recorded.append(content)
                    if proxy.mode == "tamper-manifest":
                        document = json.loads(content)
                        document["manifest"]["size"] = document["manifest"].get("size", 0) + 1
                        content = json.dumps(document).encode()
                if self.path.startswith("/api/v1/edge/artifacts/") and proxy.mode == "corrupt":
                    content = content[:-1] + bytes([content[-1] ^ 0xFF])
                keep = {k: v for k, v in headers.items() if k in ("ETag", "Content-Range")}
                self.answer(status, keep, content)

            def answer(self, status, headers, content):
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- models and fleet ---------------------------------------------------------------------------


def nan_model() -> bytes:
    """A valid model that answers NaN for every input: y = (x - x) / (x - x)."""
    graph = helper.make_graph(
        [
            helper.make_node("Sub", ["x", "x"], ["zero"]),
            helper.make_node("Div", ["zero", "zero"], ["y"]),
        ],
        "nan",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def add_version(registered, number: int, content: bytes) -> ModelVersion:
    return ModelVersionFactory(model=registered, number=number, artifact=content)


@pytest.fixture
def live(tmp_path, team, versions):
    """A fleet serving adder:1, a running web server, and a way to start agents."""
    fleet = Target.objects.create(
        team=team, name="plants", kind=TargetKind.EDGE, environment=Environment.DEV
    )
    endpoint = endpoint_create(
        actor=SYSTEM, name="plants-serving", target=fleet, version=versions[1]
    )
    assert reconciler.reconcile_endpoint(endpoint_id=endpoint.pk) == "converged"
    web = WebServer(tmp_path)
    web.start()
    agents: list[AgentProcess] = []
    proxies: list[TamperingProxy] = []

    def start_agent(name, labels=None, server=None):
        _code, plain = edge.enrollment_code_create(actor=SYSTEM, target=fleet, labels=labels)
        agent = AgentProcess(tmp_path, name, server or web.url, plain)
        agents.append(agent)
        return agent

    def proxy():
        made = TamperingProxy(web.url)
        proxies.append(made)
        return made

    try:
        yield {
            "fleet": fleet, "endpoint": endpoint, "web": web, "start_agent": start_agent,
            "proxy": proxy, "versions": versions,
        }  # fmt: skip
    except BaseException:
        raise
    finally:
        failed_logs = "\n".join(f"=== {a.name}\n{a.log()}" for a in agents)
        for agent in agents:
            agent.stop()
        web.stop()
        for made in proxies:
            made.close()
        if os.environ.get("EDGE_TEST_LOGS"):
            print(failed_logs)
            print((tmp_path / "web.log").read_text(errors="replace")[-5000:])


def device(name: str) -> EdgeDevice:
    return EdgeDevice.objects.get(name=name)


def serving(names, version: str):
    def check():
        rows = EdgeDevice.objects.filter(name__in=names)
        return len(rows) == len(names) and all(
            row.current_version == version and row.health == DeviceHealth.OK
            and row.applied_sequence == row.desired_sequence
            for row in rows
        )  # fmt: skip

    return check


def requests_counted(endpoint) -> int:
    return (
        MetricPoint.objects.filter(endpoint=endpoint).aggregate(total=Sum("requests"))["total"] or 0
    )


# --- the scenarios ------------------------------------------------------------------------------


def test_rollout_goes_wave_by_wave_and_survives_a_server_restart_losing_nothing(live):
    names = [f"cam-{n}" for n in range(4)]
    agents = {name: live["start_agent"](name) for name in names}
    wait_for(serving(names, "adder:1"), 60, "every agent to serve adder:1")
    assert all(agent.infer(1.0) == 2.0 for agent in agents.values())
    sent = len(agents)
    rollout = edge.edge_rollout_create(
        actor=SYSTEM,
        target=live["fleet"],
        version="adder:2",
        waves=[{"percent": 25}, {"percent": 50}, {"percent": 100}],
        # The rate limit keeps wave 3 back while the server is stopped below.
        wave_interval_seconds=4,
        max_failure_percent=0,
    )
    wait_for(lambda: EdgeRollout.objects.get(pk=rollout.pk).current_wave >= 1, 60, "wave 2")
    # Mid-rollout: the server goes away. Devices keep serving (cam-3, in the last wave, still
    # adder:1) and buffer what they serve.
    live["web"].stop()
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.RUNNING and rollout.current_wave == 1
    time.sleep(1.5)
    for _ in range(7):
        assert agents["cam-3"].infer(1.0) == 2.0
    sent += 7
    wait_for(
        lambda: len(list((agents["cam-3"].folder / "outbox").glob("*.json"))) >= 1,
        15,
        "cam-3 to buffer a summary while offline",
    )
    time.sleep(1.5)  # offline for a while: polls and heartbeats fail and back off
    live["web"].start()
    wait_for(
        lambda: EdgeRollout.objects.get(pk=rollout.pk).status == RolloutStatus.SUCCEEDED,
        90,
        "the rollout to finish after the restart",
    )
    wait_for(serving(names, "adder:2"), 60, "every agent to serve adder:2")
    assert all(agent.infer(1.0) == 3.0 for agent in agents.values())
    sent += len(agents)
    # Wave by wave: each wave started only after the one before had reported.
    rollout.refresh_from_db()
    waves = {}
    for row in rollout.assignments.all():
        assert row.state == RolloutDeviceState.UPDATED
        waves.setdefault(row.wave, []).append(row)
    assert [len(waves[index]) for index in sorted(waves)] == [1, 1, 2]
    for index in (1, 2):
        assert min(r.assigned_at for r in waves[index]) >= max(
            r.reported_at for r in waves[index - 1]
        )
    # Nothing lost: every inference the devices served, online or not, is counted exactly once
    # in the monitoring tables (the smoke inferences of the health checks are not traffic).
    wait_for(lambda: requests_counted(live["endpoint"]) >= sent, 30, "all summaries")
    time.sleep(1.5)
    assert requests_counted(live["endpoint"]) == sent
    versions = live["versions"]
    by_version = dict(
        MetricPoint.objects.filter(endpoint=live["endpoint"])
        .values_list("version_id")
        .annotate(total=Sum("requests"))
    )
    assert by_version == {versions[1].pk: 4 + 7, versions[2].pk: 4}
    assert all(not list((a.folder / "outbox").glob("*.json")) for a in agents.values())


def test_tampered_artifact_tampered_manifest_and_replayed_manifest_are_refused(live):
    proxy = live["proxy"]()
    agent = live["start_agent"]("gate-1", server=proxy.url)
    wait_for(serving(["gate-1"], "adder:1"), 60, "the agent to serve adder:1")
    versions = live["versions"]
    # A tampered manifest (signature no longer matches) is refused and changes nothing.
    proxy.mode = "tamper-manifest"
    rollout = edge.edge_rollout_create(actor=SYSTEM, target=live["fleet"], version="adder:2")
    wait_for(lambda: "signature" in agent.state().get("reason", ""), 30, "the manifest refusal")
    assert agent.state()["applied_sequence"] == 1 and agent.infer(1.0) == 2.0
    # A corrupted artifact never reaches a slot: sha256 mismatch, retried, then reported.
    proxy.mode = "corrupt"
    wait_for(lambda: device("gate-1").failed_version == "adder:2", 60, "the artifact refusal")
    assert "sha256" in device("gate-1").status_reason
    good = versions[2].artifacts.get().sha256
    slots = list((agent.folder / "slots").glob("*/model.onnx"))
    assert all(hashlib.sha256(path.read_bytes()).hexdigest() != good for path in slots)
    assert agent.infer(1.0) == 2.0
    # 1 of 1 device failed: the rollout aborts when the failure is next evaluated (the
    # reporting heartbeat or the beat backstop), which may come just after the report.
    wait_for(
        lambda: EdgeRollout.objects.get(pk=rollout.pk).status == RolloutStatus.ABORTED,
        30,
        "the rollout to abort",
    )
    rollout.refresh_from_db()
    # With an honest link the retry goes through.
    proxy.mode = "pass"
    retry = edge.edge_rollout_retry(actor=SYSTEM, rollout=rollout)
    wait_for(serving(["gate-1"], "adder:2"), 60, "the agent to serve adder:2")
    wait_for(
        lambda: EdgeRollout.objects.get(pk=retry.pk).status == RolloutStatus.SUCCEEDED,
        30,
        "the retry to succeed",
    )
    applied = agent.state()["applied_sequence"]
    assert applied > 1 and agent.infer(1.0) == 3.0
    # Replaying the first manifest (validly signed, but older) is refused.
    proxy.mode = "replay"
    wait_for(lambda: "replay" in device("gate-1").status_reason, 30, "the replay refusal")
    assert agent.state()["applied_sequence"] == applied
    assert device("gate-1").current_version == "adder:2"
    assert agent.infer(1.0) == 3.0


def test_a_version_failing_its_smoke_test_rolls_back_locally_and_aborts_the_rollout(live):
    names = ["line-0", "line-1", "line-2"]
    agents = {name: live["start_agent"](name) for name in names}
    wait_for(serving(names, "adder:1"), 60, "every agent to serve adder:1")
    broken = add_version(live["versions"][1].model, 4, nan_model())
    sequences = {name: device(name).desired_sequence for name in names}
    rollout = edge.edge_rollout_create(
        actor=SYSTEM,
        target=live["fleet"],
        version=broken,
        waves=[{"percent": 30}, {"percent": 100}],
        max_failure_percent=50,
        min_reported=1,
    )
    wait_for(
        lambda: EdgeRollout.objects.get(pk=rollout.pk).status == RolloutStatus.ABORTED,
        60,
        "the rollout to abort",
    )
    rollout.refresh_from_db()
    assert rollout.current_wave == 0
    failed = rollout.assignments.get()
    assert failed.device.name == "line-0" and failed.state == RolloutDeviceState.FAILED
    # line-0 swapped, failed its smoke inference, and went back to its previous slot alone.
    state = agents["line-0"].state()
    assert state["failed_version"] == "adder:4" and state["current"]["version"] == "adder:1"
    assert "NaN" in state["reason"] or "non-number" in state["reason"]
    assert agents["line-0"].infer(1.0) == 2.0
    wait_for(lambda: device("line-0").health == DeviceHealth.DEGRADED, 30, "the report")
    # The fleet is sent back: the others never got the broken version.
    for name in ("line-1", "line-2"):
        assert device(name).desired_sequence == sequences[name]
        assert agents[name].infer(1.0) == 2.0
    endpoint = live["endpoint"]
    endpoint.refresh_from_db()
    assert endpoint.desired_release.reason == ReleaseReason.ROLLBACK
    assert endpoint.desired_release.variants[0]["version"] == "adder:1"
    wait_for(
        lambda: device("line-0").applied_sequence == device("line-0").desired_sequence,
        30,
        "line-0 to acknowledge the abort",
    )
