"""The start-up smoke inference (contract 5): smoke.json when the model folder has one, rows of
zeros otherwise; a failing smoke.json refuses the start, failing zeros only warn."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from tests.runtime.helpers import free_port, iris_rows, post_json, request, start_server


@pytest.fixture(scope="module")
def range_dir(tmp_path_factory) -> Path:
    """y = Range(start, limit, delta): onnxruntime refuses delta 0, so zeros fail at run time."""
    names = ("start", "limit", "delta")
    graph = helper.make_graph(
        [helper.make_node("Range", list(names), ["y"])],
        "range",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, []) for name in names],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder = tmp_path_factory.mktemp("range")
    onnx.save(model, folder / "model.onnx")
    return folder


def range_request(delta: float) -> dict:
    values = {"start": 0.0, "limit": 3.0, "delta": delta}
    return {
        "inputs": [
            {"name": name, "datatype": "FP32", "shape": [], "data": [value]}
            for name, value in values.items()
        ]
    }


def copy_with_smoke(source: Path, target: Path, smoke: dict | None) -> Path:
    target.mkdir()
    shutil.copy(source / "model.onnx", target / "model.onnx")
    if smoke is not None:
        (target / "smoke.json").write_text(json.dumps(smoke))
    return target


def serve_once(folder: Path) -> subprocess.CompletedProcess:
    """Run a server that is expected to exit by itself."""
    return subprocess.run(
        [sys.executable, "-m", "modeldeck_runtime", "serve", "--model-dir", str(folder),
         "--port", str(free_port()), "--log-level", "info"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def smoke_metric(url: str) -> str:
    _, _, body = request("GET", url + "/metrics")
    return next(line for line in body.decode().splitlines() if line.startswith("modeldeck_smoke"))


def test_zeros_failing_on_a_loaded_model_only_warn(range_dir):
    server = start_server(range_dir, "range", "range:1", "--log-level", "info")
    try:
        status, _, payload = request("GET", server.url + "/v2/models/range")
        assert status == 200
        warning = json.loads(payload)["parameters"]["smoke_warning"]
        assert "rows of zeros failed" in warning and "delta" in warning.lower()
        assert smoke_metric(server.url).endswith(" 1.0")
        status, answer = post_json(server.url + "/v2/models/range/infer", range_request(1.0))
        assert status == 200 and answer["outputs"][0]["data"] == [0.0, 1.0, 2.0]
        server.process.terminate()
        output = server.process.communicate(timeout=20)[0].decode()
        assert "WARNING" in output and "rows of zeros failed" in output
    finally:
        server.stop()


def test_a_passing_smoke_file_is_used_instead_of_zeros(range_dir, tmp_path):
    folder = copy_with_smoke(range_dir, tmp_path / "model", range_request(1.0))
    server = start_server(folder, "range", "range:1")
    try:
        _, _, payload = request("GET", server.url + "/v2/models/range")
        assert "parameters" not in json.loads(payload)
        assert smoke_metric(server.url).endswith(" 0.0")
    finally:
        server.stop()


def test_a_failing_smoke_file_refuses_the_start(range_dir, tmp_path):
    folder = copy_with_smoke(range_dir, tmp_path / "model", range_request(0.0))
    finished = serve_once(folder)
    assert finished.returncode != 0
    assert "the smoke inference of smoke.json failed" in finished.stdout + finished.stderr


def test_a_smoke_file_that_is_no_request_refuses_the_start(iris_dir, tmp_path):
    folder = copy_with_smoke(iris_dir, tmp_path / "model", {"inputs": [{"name": "nope"}]})
    finished = serve_once(folder)
    assert finished.returncode != 0
    assert "smoke.json is not a valid request" in finished.stdout + finished.stderr


def test_reference_rows_smoke_the_iris_model(iris_dir, tmp_path):
    rows = iris_rows(8).tolist()
    smoke = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [8, 4], "data": rows}]}
    folder = copy_with_smoke(iris_dir, tmp_path / "model", smoke)
    server = start_server(folder, "iris", "iris:1")
    try:
        assert smoke_metric(server.url).endswith(" 0.0")
    finally:
        server.stop()
