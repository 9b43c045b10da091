"""Helpers for the runtime tests: HTTP calls, runtime subprocesses, misbehaving upstreams."""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from onnx import TensorProto

ADMIN_TOKEN = "test-admin-token"
STARTUP_SECONDS = 30

IDENTITY_TYPES = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}
MLP_INPUTS = 100


def run_coroutine(coroutine: Any, timeout: float | None = None) -> Any:
    """asyncio.run in a thread of its own: a session-scoped Playwright (the e2e tier) keeps an
    event loop running in the main thread of its xdist worker, where asyncio.run refuses to
    start."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result(timeout)


def free_port() -> int:
    """A port that nothing listens on right now, from LOCAL_TARGET_PORT_RANGE when it is set."""
    span = os.environ.get("LOCAL_TARGET_PORT_RANGE", "")
    if span:
        low, _, high = span.partition("-")
        candidates = list(range(int(low), int(high) + 1))
        random.shuffle(candidates)
    else:
        candidates = [0]
    for port in candidates:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise RuntimeError(f"no free port in {span}")


def request(
    method: str,
    url: str,
    body: bytes | dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request; returns status, lower-case headers and body."""
    assert url.startswith("http://")
    host, _, path = url[len("http://") :].partition("/")
    connection = http.client.HTTPConnection(host, timeout=timeout)
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    try:
        connection.request(method, "/" + path, body=body, headers=headers or {})
        response = connection.getresponse()
        payload = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, payload
    finally:
        connection.close()


def post_json(url: str, document: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """POST a JSON document and decode the JSON answer."""
    status, _, payload = request("POST", url, json.dumps(document).encode(), headers)
    return status, json.loads(payload)


class RuntimeProcess:
    """A modeldeck-serve or modeldeck-gateway subprocess."""

    def __init__(self, arguments: list[str], port: int, ready_path: str) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "modeldeck_runtime", *arguments, "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=environment,
        )
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.process.stdout.read().decode() if self.process.stdout else ""
                raise RuntimeError(f"{arguments[0]} exited early:\n{output}")
            try:
                status, _, _ = request("GET", self.url + ready_path, timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{arguments[0]} did not become ready on port {port}")

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it does not drain in time; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()
        return self.process.returncode


def start_server(
    model_dir: Path, name: str, version: str, *extra: str, endpoint: str = "test"
) -> RuntimeProcess:
    """Start a version server and wait until it is ready."""
    arguments = [
        "serve",
        "--model-dir",
        str(model_dir),
        "--model-name",
        name,
        "--model-version",
        version,
        "--endpoint",
        endpoint,
        "--threads",
        "1",
        *extra,
    ]
    return RuntimeProcess(arguments, free_port(), "/v2/health/ready")


def start_gateway(*extra: str, endpoint: str = "test") -> RuntimeProcess:
    """Start a gateway and wait until it is live."""
    arguments = ["gateway", "--admin-token", ADMIN_TOKEN, "--endpoint", endpoint, *extra]
    return RuntimeProcess(arguments, free_port(), "/-/health")


def put_routes(gateway: RuntimeProcess, table: dict[str, Any]) -> tuple[int, Any]:
    """PUT a route table with the admin token."""
    status, _, payload = request(
        "PUT",
        gateway.url + "/-/routes",
        table,
        {"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    return status, json.loads(payload)


def routes(*entries: tuple[str, RuntimeProcess | str, float, str], generation: int = 1) -> dict:
    """Build a route table from (version, server or url, weight, role) tuples."""
    table_routes = []
    for version, upstream, weight, role in entries:
        url = upstream.url if isinstance(upstream, RuntimeProcess) else upstream
        entry = {"version": version, "upstream": url, "weight": weight, "role": role}
        if role == "shadow":
            entry = {"version": version, "upstream": url, "role": role, "mirror_percent": weight}
        table_routes.append(entry)
    return {"generation": generation, "sticky": None, "routes": table_routes}


def iris_rows(count: int = 8) -> np.ndarray:
    """Iris-like feature rows."""
    from sklearn.datasets import load_iris

    features, _ = load_iris(return_X_y=True)
    return features[np.linspace(0, len(features) - 1, count).astype(int)].astype(np.float32)


class MisbehavingUpstream:
    """A stand-in upstream that fails (500), hangs, or answers slowly, to test isolation."""

    def __init__(self, behaviour: str) -> None:
        release = threading.Event()
        self.release = release

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                self.rfile.read(length)
                if behaviour == "hang":
                    release.wait(60)
                    return
                if behaviour == "slow":
                    time.sleep(1)
                    body = b'{"outputs":{}}'
                    status = 200
                else:
                    body = b'{"error":"shadow exploded"}'
                    status = 500
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *arguments: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Release hung requests and stop."""
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse /metrics into {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    status, _, payload = request("GET", url + "/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(payload.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """Sum the samples of one name whose labels include the given ones."""
    total = 0.0
    for (sample_name, sample_labels), value in samples.items():
        if sample_name == name and labels.items() <= dict(sample_labels).items():
            total += value
    return total


def median_health_seconds(url: str, count: int = 21) -> float:
    """Median time of a GET /v2/health/live on a fresh connection (a baseline to compare with)."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        status, _, _ = request("GET", url + "/v2/health/live")
        times.append(time.perf_counter() - started)
        assert status == 200
    return sorted(times)[count // 2]


def stays_healthy(url: str, baseline: float, factor: float = 10.0) -> None:
    """The server still answers health checks within factor x its own baseline latency."""
    after = median_health_seconds(url)
    assert after < baseline * factor, f"health checks slowed from {baseline:.5f}s to {after:.5f}s"


def rss_megabytes(pid: int) -> float:
    """Resident memory of a process."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")
