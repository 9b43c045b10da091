"""Real runtime processes (version server, gateway) on free 127.0.0.1 ports, and a tiny model."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

STARTUP_SECONDS = 30
ADMIN_TOKEN = "monitoring-test-admin-token"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_model(folder: Path, profile: dict | None = None) -> Path:
    """A small MLP over a [batch, 2] float input, with an optional reference.json.

    Its 16 shared 256×256 layers take a few milliseconds per request on one thread, so that
    server time (what the histograms measure) dominates the client's own overhead when the two
    are compared.
    """
    folder.mkdir(parents=True, exist_ok=True)
    generator = np.random.default_rng(7)
    width, layers = 256, 16
    expand = (generator.standard_normal((2, width * width)) * 0.1).astype(np.float32)
    weights = (generator.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["X", "expand"], ["wide"]),
        helper.make_node("Reshape", ["wide", "square"], ["a0"]),
    ]
    for layer in range(layers):
        nodes.append(helper.make_node("MatMul", [f"a{layer}", "weights"], [f"b{layer}"]))
        nodes.append(helper.make_node("Tanh", [f"b{layer}"], [f"a{layer + 1}"]))
    nodes.append(helper.make_node("ReduceMean", [f"a{layers}"], ["Y"], keepdims=1))
    graph = helper.make_graph(
        nodes,
        "busy",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 1])],
        initializer=[
            numpy_helper.from_array(expand, "expand"),
            numpy_helper.from_array(weights, "weights"),
            numpy_helper.from_array(np.array([-1, width], dtype=np.int64), "square"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, folder / "model.onnx")
    if profile is not None:
        (folder / "reference.json").write_text(json.dumps(profile))
    return folder


def request(method: str, url: str, body: bytes | None = None, headers=None, timeout=10.0):
    """One HTTP request on a fresh connection: (status, body)."""
    host, _, path = url.removeprefix("http://").partition("/")
    connection = http.client.HTTPConnection(host, timeout=timeout)
    try:
        connection.request(method, "/" + path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


class RuntimeProcess:
    """`python -m modeldeck_runtime serve|gateway …` on a port, waited until it answers."""

    def __init__(self, arguments: list[str], port: int, ready_path: str, env=None) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "modeldeck_runtime", *arguments, "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.process.stdout.read().decode() if self.process.stdout else ""
                raise RuntimeError(f"{arguments[0]} exited early:\n{output}")
            try:
                if request("GET", self.url + ready_path, timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{arguments[0]} did not become ready on port {port}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()


def start_server(model_dir: Path, version: str, *, endpoint: str, port: int | None = None):
    """A version server of `version` ("model:N"), as the local driver starts it."""
    arguments = [
        "serve",
        "--model-dir",
        str(model_dir),
        "--model-name",
        endpoint,
        "--model-version",
        version,
        "--endpoint",
        endpoint,
        "--threads",
        "1",
        "--drain-seconds",
        "1",
    ]
    return RuntimeProcess(arguments, port or free_port(), "/v2/health/ready")


def start_gateway(*, endpoint: str):
    arguments = ["gateway", "--endpoint", endpoint, "--drain-seconds", "1"]
    return RuntimeProcess(
        arguments, free_port(), "/-/health", env={"MODELDECK_GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN}
    )


def put_routes(gateway: RuntimeProcess, routes: list[dict], generation: int = 1) -> None:
    body = json.dumps({"generation": generation, "sticky": None, "routes": routes}).encode()
    status, answer = request(
        "PUT", gateway.url + "/-/routes", body, {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert status == 200, answer


def counter_total(url: str, sample: str = "modeldeck_requests_total") -> float:
    """The sum of one sample over all label sets, read straight from /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    status, body = request("GET", url + "/metrics")
    assert status == 200
    return sum(
        s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
        if s.name == sample
    )


def wait_for_count(url: str, expected: float, seconds: float = 5.0) -> None:
    """The runtime counts a request right after answering it; wait until it has."""
    deadline = time.monotonic() + seconds
    while counter_total(url) < expected and time.monotonic() < deadline:
        time.sleep(0.01)
    assert counter_total(url) == expected
