"""Serving benchmark: raw onnxruntime, HTTP floors, the version server, the gateway, Triton's
Python backend, MLflow.

Run from the repository root: `python bench/runtime_serving.py` (needs Debian's `wrk`).
Every HTTP figure comes from wrk against 127.0.0.1; servers and wrk share this machine's cores.
Each HTTP figure is the best of --rounds runs (default 3) of --duration seconds (default 3),
interleaved across targets. Triton is the real `tritonserver` binary of PyPI's nvidia-pytriton
wheel (installed into var/bench-runtime/triton-venv on first use), serving the same model.onnx
through its Python backend (targets `triton` and, with --batch-max-rows, `triton+batching`); its
answers are checked against the version server's before measuring. Other options: --skip-triton,
--triton-install-timeout SECONDS, --skip-mlflow, --mlflow-install-timeout SECONDS,
--workers N (also a version server with N processes on its port; default 2),
--batch-max-rows N (also one with dynamic batching of N rows, and one with both the workers and
batching; default 64), --batch-delay-us D (how long a request may wait for others in a batch, for
the version server and Triton alike; default 0: each batches what is queued at the time),
--models, --rows, --connections (comma-separated subsets, for short runs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "var" / "bench-runtime"
ADMIN_TOKEN = "bench-admin-token"
MLP_INPUTS = 100


def free_port() -> int:
    """A port nothing listens on right now (from LOCAL_TARGET_PORT_RANGE when it is set)."""
    span = os.environ.get("LOCAL_TARGET_PORT_RANGE", "")
    candidates = [0]
    if span:
        low, _, high = span.partition("-")
        candidates = list(range(int(low), int(high) + 1))
        random.shuffle(candidates)
    for port in candidates:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise RuntimeError(f"no free port in {span}")


def build_models() -> dict[str, Path]:
    """The small tabular classifier (sklearn on iris) and an MLP with 100 inputs."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    features = features.astype(np.float32)
    iris = WORK / "models" / "iris"
    iris.mkdir(parents=True, exist_ok=True)
    classifier = LogisticRegression(max_iter=1000).fit(features, labels)
    onnx.save(to_onnx(classifier, features[:1]), iris / "model.onnx")

    generator = np.random.default_rng(7)
    weights = {
        "W1": generator.standard_normal((MLP_INPUTS, 64)).astype(np.float32) * 0.1,
        "B1": np.zeros(64, dtype=np.float32),
        "W2": generator.standard_normal((64, 3)).astype(np.float32) * 0.1,
        "B2": np.zeros(3, dtype=np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["X", "W1"], ["a"]),
        helper.make_node("Add", ["a", "B1"], ["b"]),
        helper.make_node("Relu", ["b"], ["c"]),
        helper.make_node("MatMul", ["c", "W2"], ["d"]),
        helper.make_node("Add", ["d", "B2"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", MLP_INPUTS])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    mlp = WORK / "models" / "mlp"
    mlp.mkdir(parents=True, exist_ok=True)
    onnx.save(model, mlp / "model.onnx")
    return {"iris": iris, "mlp": mlp}


def rows_for(model: str, count: int) -> np.ndarray:
    """Input rows for a model."""
    width = 4 if model == "iris" else MLP_INPUTS
    generator = np.random.default_rng(count)
    return (generator.random((count, width)) * 5).astype(np.float32)


def v2_body(model: str, count: int) -> bytes:
    """A v2 JSON inference request."""
    rows = rows_for(model, count)
    tensor = {"name": "X", "datatype": "FP32", "shape": list(rows.shape)}
    return json.dumps({"inputs": [tensor | {"data": rows.ravel().tolist()}]}).encode()


class Process:
    """A background server process that is stopped at the end."""

    def __init__(
        self,
        command: list[str],
        port: int,
        ready_path: str,
        environment: dict[str, str] | None = None,
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=environment
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{command[:3]} exited: {self.process.stderr.read().decode()}")
            try:
                with urllib.request.urlopen(self.url + ready_path, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{command[:3]} never became ready")

    def peak_rss_megabytes(self, children: bool = False) -> float:
        """VmHWM of the process (plus its children's, e.g. Triton's Python-backend stubs)."""
        kilobytes = 0
        for pid in [self.process.pid, *(children_of(self.process.pid) if children else [])]:
            status = Path(f"/proc/{pid}/status").read_text()
            kilobytes += int(re.search(r"VmHWM:\s+(\d+)", status).group(1))
        return kilobytes / 1024

    def stop(self) -> None:
        """SIGTERM and wait."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()


def children_of(pid: int) -> list[int]:
    """Direct children of a process, started by any of its threads (a server's workers,
    Triton's Python-backend stub)."""
    found: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in children.read_text().split()]
        except OSError:
            continue
    return found


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its direct children (a server's workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    pids = [pid, *children_of(pid)]
    total = 0.0
    for each in pids:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def wrk(
    url: str,
    body: bytes,
    connections: int,
    duration: float,
    warm_up: bool = True,
    pid: int | None = None,
) -> dict[str, float]:
    """Requests/s, p50 and p99 (seconds) from one wrk run (after a one-second warm-up), and the
    server's CPU microseconds per request when its pid is given (a figure that other load on
    the machine does not shrink the way it shrinks req/s)."""
    escaped = body.decode().replace("\\", "\\\\").replace("'", "\\'")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\n'
            f"wrk.body = '{escaped}'\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
    threads = 1 if connections == 1 else 2
    base = ["wrk", f"-t{threads}", f"-c{connections}", "--latency", "-s", script.name, url]
    if warm_up:
        subprocess.run([*base[:3], "-d1s", *base[3:]], capture_output=True, check=True)
    cpu_before = cpu_seconds(pid) if pid is not None else 0.0
    output = subprocess.run(
        [*base[:3], f"-d{duration:g}s", *base[3:]], capture_output=True, text=True, check=True
    ).stdout
    cpu_used = cpu_seconds(pid) - cpu_before if pid is not None else 0.0
    os.unlink(script.name)
    if "Non-2xx" in output or "Socket errors" in output:
        raise RuntimeError(f"errors during the run against {url}:\n{output}")
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    return {
        "cpu_us": cpu_used / max(requests, 1) * 1e6,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50": _seconds(re.search(r"50%\s+([\d.]+\w+)", output).group(1)),
        "p99": _seconds(re.search(r"99%\s+([\d.]+\w+)", output).group(1)),
    }


def _seconds(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(\w+)", text).groups()
    return float(number) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


def raw_onnxruntime(path: Path, rows: np.ndarray, seconds: float) -> dict[str, float]:
    """session.run in-process, one thread of onnxruntime, like the servers."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path / "model.onnx"), options)
    feeds = {"X": rows}
    for _ in range(200):
        session.run(None, feeds)
    timings = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        session.run(None, feeds)
        timings.append(time.perf_counter() - started)
    timings.sort()
    return {
        "rps": len(timings) / sum(timings),
        "p50": statistics.median(timings),
        "p99": timings[int(len(timings) * 0.99)],
    }


def start_runtime(
    models: dict[str, Path], workers: int, batch_rows: int, batch_delay_us: int
) -> dict[str, Process]:
    """Floor, one version server per model (and one with `workers` processes sharing its port)
    and one gateway per model."""
    python = sys.executable
    processes = {}
    for name, stack in (("floor", "builtin"), ("floor-uvicorn", "uvicorn")):
        port = free_port()
        processes[name] = Process(
            [python, str(ROOT / "bench" / "runtime_floor.py"), str(port), stack], port, "/"
        )

    def version_server(folder: Path, name: str, *options: str) -> Process:
        port = free_port()
        return Process(
            [python, "-m", "modeldeck_runtime", "serve", "--model-dir", str(folder),
             "--model-name", name, "--model-version", "1", "--threads", "1",
             *options, "--port", str(port)],
            port,
            "/v2/health/ready",
        )  # fmt: skip

    workers_options = ("--workers", str(workers))
    batching_options = (
        "--batch-max-rows", str(batch_rows), "--batch-max-delay-us", str(batch_delay_us)
    )  # fmt: skip
    for name, folder in models.items():
        processes[f"server-{name}"] = version_server(folder, name)
        if workers > 1:
            processes[f"server-w{workers}-{name}"] = version_server(folder, name, *workers_options)
        if batch_rows:
            processes[f"server-batch-{name}"] = version_server(folder, name, *batching_options)
        if workers > 1 and batch_rows:
            processes[f"server-w{workers}-batch-{name}"] = version_server(
                folder, name, *workers_options, *batching_options
            )
        routes_file = WORK / f"routes-{name}.json"
        routes_file.write_text(
            json.dumps(
                {
                    "generation": 1,
                    "sticky": None,
                    "routes": [
                        {
                            "version": "1",
                            "upstream": processes[f"server-{name}"].url,
                            "weight": 100,
                            "role": "primary",
                        }
                    ],
                }
            )
        )
        port = free_port()
        processes[f"gateway-{name}"] = Process(
            [python, "-m", "modeldeck_runtime", "gateway", "--admin-token", ADMIN_TOKEN,
             "--endpoint", name, "--routes-file", str(routes_file), "--port", str(port)],
            port,
            "/v2/health/ready",
        )  # fmt: skip
    return processes


def mlflow_target(models: dict[str, Path], timeout: float) -> tuple[Process | None, str]:
    """Install MLflow into its own venv and serve the iris model, or say why not."""
    venv = WORK / "mlflow-venv"
    python = venv / "bin" / "python"
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        started = time.monotonic()
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "mlflow", "onnxruntime", "onnx"],
            check=True,
            timeout=timeout,
            capture_output=True,
        )
        print(f"  MLflow installed in {time.monotonic() - started:.0f} s")
    except subprocess.TimeoutExpired:
        return None, f"pip install mlflow took longer than {timeout:g} s"
    except subprocess.CalledProcessError as error:
        return None, f"pip install mlflow failed: {error.stderr.decode()[-300:]}"
    exported = WORK / "mlflow-iris"
    if not exported.exists():
        script = (
            "import sys, onnx, mlflow.onnx\n"
            "mlflow.onnx.save_model(onnx.load(sys.argv[1]), sys.argv[2])\n"
        )
        subprocess.run(
            [str(python), "-c", script, str(models["iris"] / "model.onnx"), str(exported)],
            check=True,
            capture_output=True,
        )
    port = free_port()
    try:
        process = Process(
            [str(venv / "bin" / "mlflow"), "models", "serve", "-m", str(exported),
             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
            port,
            "/ping",
            # mlflow starts its scoring server by running `uvicorn` from PATH
            {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"},
        )  # fmt: skip
    except RuntimeError as error:
        return None, f"mlflow models serve did not start: {str(error)[-300:]}"
    return process, ""


# Triton's Python backend runs this file (model.py) in its stub process: the same model.onnx,
# onnxruntime with the version server's session options, one session.run per execute() call
# (with dynamic batching, one call answers every request Triton gathered into the batch).
TRITON_MODEL_PY = '''"""Written by bench/runtime_serving.py: serve model.onnx with onnxruntime."""

import json
import sys

# The stub runs an isolated interpreter (PYTHONPATH is ignored): numpy and onnxruntime come from
# the Triton venv, ahead of any numpy of the interpreter's own site-packages.
sys.path.insert(0, @SITE_PACKAGES@)

import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(
            config["parameters"]["onnx_path"]["string_value"],
            sess_options=options,
            providers=["CPUExecutionProvider"],
        )
        self.input = self.session.get_inputs()[0].name
        self.outputs = [output.name for output in self.session.get_outputs()]

    def execute(self, requests):
        arrays = [
            pb_utils.get_input_tensor_by_name(request, self.input).as_numpy()
            for request in requests
        ]
        rows = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        columns = []
        for value in self.session.run(self.outputs, {self.input: rows}):
            if isinstance(value, list):
                # sklearn's ZipMap: one {class: probability} dict per row -> FP32 [N, classes]
                classes = sorted(value[0]) if value else []
                value = np.array(
                    [[row[label] for label in classes] for row in value], dtype=np.float32
                ).reshape(len(value), len(classes))
            columns.append(value)
        responses = []
        start = 0
        for array in arrays:
            end = start + len(array)
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(column[start:end]))
                for name, column in zip(self.outputs, columns, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start = end
        return responses
'''

TRITON_TYPES = {np.dtype(np.float32): "TYPE_FP32", np.dtype(np.int64): "TYPE_INT64"}


def triton_config(name: str, onnx_path: Path, batch_rows: int, batch_delay_us: int) -> str:
    """config.pbtxt for a Python-backend model serving onnx_path: max_batch_size 0 with [-1, F]
    shapes (the v2 payload the version server takes), or dynamic batching of batch_rows rows
    (batch_delay_us, like the version server's --batch-max-rows/--batch-max-delay-us), where Triton
    adds the batch dimension itself so the payload stays the same."""
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    width = session.get_inputs()[0].shape[1]
    outputs = []
    for output, value in zip(
        session.get_outputs(), session.run(None, {"X": rows_for(name, 2)}), strict=True
    ):
        if isinstance(value, list):
            array = np.asarray([[row[label] for label in sorted(row)] for row in value], np.float32)
        else:
            array = np.asarray(value)
        outputs.append((output.name, TRITON_TYPES[array.dtype], list(array.shape[1:])))

    def dims(trailing: list[int]) -> str:
        if batch_rows:
            # a batch-only output ([N], the label) is declared [1]; the Python backend passes the
            # [N] that model.py returns through unchanged, as the version server answers it
            return str(trailing) if trailing else "[ 1 ]"
        return str([-1, *trailing])

    lines = [
        f'name: "{name}"',
        'backend: "python"',
        f"max_batch_size: {batch_rows}",
        f'input [ {{ name: "X" data_type: TYPE_FP32 dims: {dims([width])} }} ]',
        "output [",
        ",\n".join(
            f'  {{ name: "{output}" data_type: {kind} dims: {dims(trailing)} }}'
            for output, kind, trailing in outputs
        ),
        "]",
        "instance_group [ { count: 1 kind: KIND_CPU } ]",
        f'parameters {{ key: "onnx_path" value: {{ string_value: "{onnx_path}" }} }}',
    ]
    if batch_rows:
        lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: {batch_delay_us} }}")
    return "\n".join(lines) + "\n"


def triton_targets(
    models: dict[str, Path], timeout: float, batch_rows: int, batch_delay_us: int
) -> tuple[dict[str, Process], str, str]:
    """Install the nvidia-pytriton wheel (only for the tritonserver binary, its Python backend and
    backend stubs; PyTriton's own Python proxy is not used) into its own venv, and start one
    tritonserver per model (and one with dynamic batching per model when batch_rows is set).
    Returns the processes keyed like start_runtime's, how Triton was run, or why not."""
    venv = WORK / "triton-venv"
    python = venv / "bin" / "python"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    packages = venv / "lib" / f"python{version}" / "site-packages"
    wheel = packages / "pytriton" / "tritonserver"
    # --no-deps: only the server binary and its backends are used, not PyTriton's Python side.
    # onnxruntime is this interpreter's version; numpy stays below 2 because the stub's pybind11
    # reads numpy 1's array layout (with numpy 2 every answer fails: "output tensor shape does
    # not match size of output").
    requirements = ["nvidia-pytriton==0.7.0", "numpy<2", f"onnxruntime=={onnxruntime.__version__}"]
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        marker = venv / "bench-requirements.txt"
        if not marker.exists() or marker.read_text() != " ".join(requirements):
            started = time.monotonic()
            subprocess.run(
                [str(python), "-m", "pip", "install", "--quiet", "--no-deps", *requirements],
                check=True,
                timeout=timeout,
                capture_output=True,
            )
            marker.write_text(" ".join(requirements))
            print(f"  nvidia-pytriton installed in {time.monotonic() - started:.0f} s")
    except subprocess.TimeoutExpired:
        return {}, "", f"pip install nvidia-pytriton took longer than {timeout:g} s"
    except subprocess.CalledProcessError as error:
        return {}, "", f"pip install nvidia-pytriton failed: {error.stderr.decode()[-300:]}"
    stub = wheel / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        return {}, "", f"nvidia-pytriton 0.7.0 has no Python-backend stub for Python {version}"
    # Triton loads <backend-directory>/python/libtriton_python.so and expects the stub and
    # triton_python_backend_utils.py next to it.
    backends = WORK / "triton-backends"
    layout = {
        "libtriton_python.so": wheel / "backends" / "python" / "libtriton_python.so",
        "triton_python_backend_utils.py": wheel / "backends" / "python"
        / "triton_python_backend_utils.py",
        "triton_python_backend_stub": stub,
    }  # fmt: skip
    (backends / "python").mkdir(parents=True, exist_ok=True)
    for name, source in layout.items():
        link = backends / "python" / name
        link.unlink(missing_ok=True)
        link.symlink_to(source)
    repository = WORK / "triton-models"
    shutil.rmtree(repository, ignore_errors=True)
    variants = {"triton": 0} | ({"triton+batching": batch_rows} if batch_rows else {})
    # The stub embeds libpython3.X.so.1.0: this interpreter's own when it has one, so the model
    # code runs on the same CPython build as the version server; model.py adds the Triton venv's
    # site-packages (numpy, onnxruntime) to the stub's path.
    libraries = [str(packages / "nvidia_pytriton.libs")]
    own_libpython = Path(sysconfig.get_config_var("LIBDIR") or "/") / f"libpython{version}.so.1.0"
    if own_libpython.exists():
        libraries.insert(0, str(own_libpython.parent))
    environment = {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(libraries)}
    processes: dict[str, Process] = {}
    try:
        for variant, rows in variants.items():
            for name, folder in models.items():
                model = repository / variant.replace("+", "-") / name
                (model / "1").mkdir(parents=True)
                (model / "1" / "model.py").write_text(
                    TRITON_MODEL_PY.replace("@SITE_PACKAGES@", repr(str(packages)))
                )
                (model / "config.pbtxt").write_text(
                    triton_config(name, folder / "model.onnx", rows, batch_delay_us)
                )
                port, metrics_port = free_port(), free_port()
                processes[f"{variant}-{name}"] = Process(
                    [str(wheel / "bin" / "tritonserver"),
                     f"--model-repository={model.parent}",
                     "--model-control-mode=explicit", f"--load-model={name}",
                     f"--backend-directory={backends}",
                     f"--backend-config=python,shm-region-prefix-name=bench{port}",
                     "--http-address=127.0.0.1", f"--http-port={port}",
                     "--allow-grpc=false",
                     "--metrics-address=127.0.0.1", f"--metrics-port={metrics_port}",
                     "--log-info=false", "--exit-on-error=true"],
                    port,
                    "/v2/health/ready",
                    environment,
                )  # fmt: skip
    except RuntimeError as error:
        for process in processes.values():
            process.stop()
        return {}, "", f"tritonserver did not start: {str(error)[-600:]}"
    with urllib.request.urlopen(next(iter(processes.values())).url + "/v2", timeout=5) as answer:
        metadata = json.load(answer)

    def installed(package: str) -> str:
        found = packages.glob(f"{package}-*.dist-info")
        return ", ".join(path.name.removesuffix(".dist-info").split("-")[1] for path in found)

    libpython = own_libpython if own_libpython.exists() else f"the system's libpython{version}"
    how = (
        f"Triton {metadata['version']} (the tritonserver binary of the nvidia-pytriton 0.7.0 "
        f"wheel, Python backend, stub on {libpython}, numpy {installed('numpy')}, onnxruntime "
        f"{installed('onnxruntime')}); one tritonserver per model and variant, one KIND_CPU "
        f"instance, HTTP only (gRPC off, metrics on); variants: {', '.join(variants)}"
    )
    return processes, how, ""


def triton_batches(processes: dict[str, Process]) -> str:
    """How many requests the triton+batching models answered in how many model executions
    (Triton's own statistics), i.e. whether dynamic batching gathered requests."""
    parts = []
    for key, process in processes.items():
        if key.startswith("triton+batching-"):
            model = key.rsplit("-", 1)[1]
            url = f"{process.url}/v2/models/{model}/stats"
            with urllib.request.urlopen(url, timeout=5) as answer:
                stats = json.load(answer)["model_stats"][0]
            requests = stats["inference_stats"]["success"]["count"]
            parts.append(
                f"{model} {requests} requests ({stats['inference_count']} rows) in "
                f"{stats['execution_count']} model executions"
            )
    return ", ".join(parts)


def _outputs_by_name(answer: dict) -> dict[str, np.ndarray]:
    """A v2 JSON response's outputs as arrays; BYTES rows of JSON objects (the version server's
    ZipMap answer) become FP32 [N, classes] in class order, like Triton's model.py answers."""
    arrays = {}
    for output in answer["outputs"]:
        data = output["data"]
        if output["datatype"] == "BYTES":
            rows = [json.loads(row) for row in data]
            data = [[row[key] for key in sorted(row, key=int)] for row in rows]
            arrays[output["name"]] = np.asarray(data, dtype=np.float32)
        else:
            arrays[output["name"]] = np.asarray(data).reshape(output["shape"])
    return arrays


def check_same_answers(url: str, reference_url: str, model: str, count: int) -> None:
    """One request to a Triton model and to the version server with the same rows; raise if
    their outputs differ, so that both are measured doing the same work."""
    body = v2_body(model, count)
    answers = []
    for base in (url, reference_url):
        request = urllib.request.Request(
            f"{base}/v2/models/{model}/infer",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answers.append(_outputs_by_name(json.load(response)))
    triton, server = answers
    if set(triton) != set(server):
        raise RuntimeError(f"{model}: Triton outputs {sorted(triton)}, server {sorted(server)}")
    for name, expected in server.items():
        got = triton[name]
        if got.shape != expected.shape or not np.allclose(got, expected, rtol=1e-6, atol=1e-7):
            raise RuntimeError(
                f"{model} rows={count} output {name} differs from the version server's: "
                f"Triton {got.ravel()[:6]} {got.shape}, server {expected.ravel()[:6]} "
                f"{expected.shape}"
            )


def main() -> int:
    """Run everything, print the table and write bench/RESULTS.md figures to stdout."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument("--mlflow-install-timeout", type=float, default=420.0)
    parser.add_argument("--skip-triton", action="store_true")
    parser.add_argument("--triton-install-timeout", type=float, default=420.0)
    parser.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="also measure a version server with this many processes on its port (1: not)",
    )
    parser.add_argument(
        "--batch-max-rows",
        type=int,
        default=64,
        help="also measure a version server with dynamic batching of this many rows (0: not)",
    )
    parser.add_argument(
        "--batch-delay-us",
        type=int,
        default=0,
        help="how long a batched request may wait for others (version server and Triton)",
    )
    parser.add_argument("--models", default="iris,mlp", help="comma-separated: iris, mlp")
    parser.add_argument("--rows", default="1,64", help="comma-separated row counts")
    parser.add_argument("--connections", default="1,16", help="comma-separated")
    arguments = parser.parse_args()
    row_counts = [int(value) for value in arguments.rows.split(",")]
    connection_counts = [int(value) for value in arguments.connections.split(",")]
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install -y wrk")
        return 1
    WORK.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    models = {
        name: folder
        for name, folder in build_models().items()
        if name in arguments.models.split(",")
    }
    results: dict[tuple[str, str, int, int], dict[str, float]] = {}
    for model, folder in models.items():
        for count in row_counts:
            results[("onnxruntime", model, count, 1)] = raw_onnxruntime(
                folder, rows_for(model, count), arguments.duration
            )
    processes = start_runtime(
        models, arguments.workers, arguments.batch_max_rows, arguments.batch_delay_us
    )
    triton_how, triton_note = "", "skipped (--skip-triton)"
    try:
        if not arguments.skip_triton:
            print("Triton: installing into var/bench-runtime/triton-venv and starting ...")
            # Triton refuses requests of more rows than max_batch_size: no batching variant then
            batch_rows = arguments.batch_max_rows
            batch_rows = batch_rows if batch_rows >= max(row_counts) else 0
            triton, triton_how, triton_note = triton_targets(
                models, arguments.triton_install_timeout, batch_rows, arguments.batch_delay_us
            )
            processes |= triton
            for key, process in triton.items():
                model = key.rsplit("-", 1)[1]
                for count in row_counts:
                    check_same_answers(process.url, processes[f"server-{model}"].url, model, count)
            if triton:
                print(f"  {triton_how}; answers equal the version server's")
        for model in models:
            for count in row_counts:
                body = v2_body(model, count)
                path = f"/v2/models/{model}/infer"
                for connections in connection_counts:
                    targets = {
                        "floor": processes["floor"],
                        "floor-uvicorn": processes["floor-uvicorn"],
                        "server": processes[f"server-{model}"],
                        "gateway": processes[f"gateway-{model}"],
                    }
                    if arguments.workers > 1:
                        targets[f"server×{arguments.workers}"] = processes[
                            f"server-w{arguments.workers}-{model}"
                        ]
                    if arguments.batch_max_rows:
                        targets["server+batching"] = processes[f"server-batch-{model}"]
                    if arguments.workers > 1 and arguments.batch_max_rows:
                        targets[f"server×{arguments.workers}+batching"] = processes[
                            f"server-w{arguments.workers}-batch-{model}"
                        ]
                    for variant in ("triton", "triton+batching"):
                        if f"{variant}-{model}" in processes:
                            targets[variant] = processes[f"{variant}-{model}"]
                    # Rounds interleave the targets and keep each one's best run, so a burst of
                    # load from other processes on this small machine hurts one run, not a figure.
                    for round_number in range(arguments.rounds):
                        for target, process in targets.items():
                            key = (target, model, count, connections)
                            figures = wrk(
                                process.url + path,
                                body,
                                connections,
                                arguments.duration,
                                round_number == 0,
                                process.process.pid,
                            )
                            if key not in results or figures["rps"] > results[key]["rps"]:
                                results[key] = figures
                    for target in targets:
                        key = (target, model, count, connections)
                        _print_row(key, results[key])
        rss = {
            name: process.peak_rss_megabytes(children=name.startswith("triton"))
            for name, process in processes.items()
        }
        batching_note = triton_batches(processes)
    finally:
        for process in processes.values():
            process.stop()

    mlflow_note = "skipped (--skip-mlflow)"
    if not arguments.skip_mlflow and "iris" in models:
        print("MLflow: installing into var/bench-runtime/mlflow-venv ...")
        process, mlflow_note = mlflow_target(models, arguments.mlflow_install_timeout)
        if process is not None:
            try:
                for count in row_counts:
                    rows = rows_for("iris", count).tolist()
                    body = json.dumps({"inputs": rows}).encode()
                    for connections in connection_counts:
                        key = ("mlflow", "iris", count, connections)
                        runs = [
                            wrk(
                                process.url + "/invocations",
                                body,
                                connections,
                                arguments.duration,
                                round_number == 0,
                            )
                            for round_number in range(arguments.rounds)
                        ]
                        results[key] = max(runs, key=lambda figures: figures["rps"])
                        _print_row(key, results[key])
                rss["mlflow"] = process.peak_rss_megabytes()
                mlflow_note = ""
            finally:
                process.stop()
    _report(results, rss, mlflow_note, arguments.workers, bool(arguments.batch_max_rows))
    print(f"Triton: {triton_how or triton_note}")
    if batching_note:
        print(f"Triton dynamic batching: {batching_note}")
    print(
        f"load average (1 min) before {load_before:.2f}, after {os.getloadavg()[0]:.2f} "
        "(this benchmark alone keeps about 2 busy)"
    )
    return 0


def _print_row(key: tuple[str, str, int, int], figures: dict[str, float]) -> None:
    target, model, count, connections = key
    print(
        f"  {target:<11} {model:<5} rows={count:<3} connections={connections:<3} "
        f"{figures['rps']:>9.0f} req/s  p50 {figures['p50'] * 1e3:7.3f} ms  "
        f"p99 {figures['p99'] * 1e3:7.3f} ms  cpu {figures.get('cpu_us', 0):6.1f} us/req"
    )


# Triton's Python backend serving the same iris model, as measured side by side with this
# runtime in issue 20. Keys: (rows, connections) -> req/s. Quoted only when Triton is not
# measured in this run (--skip-triton, or its install or start failed).
TRITON_PYTHON_BACKEND_ISSUE_20 = {(1, 16): 5900, (64, 16): 2300}


def _report(results, rss, mlflow_note: str, workers: int, batching: bool) -> None:
    print()
    print(f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}")
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
          f"{platform.python_implementation()} {platform.python_version()}, "
          f"onnxruntime {onnxruntime.__version__}")  # fmt: skip
    print()
    print(
        "| target | model | rows | conns | req/s | p50 ms | p99 ms | CPU µs/req | /floor "
        "| /uvicorn floor | /uvicorn floor by CPU | gateway/server | gateway adds p50 ms "
        "| server/triton |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (target, model, count, connections), figures in results.items():
        floor = results.get(("floor", model, count, connections))
        uvicorn_floor = results.get(("floor-uvicorn", model, count, connections))
        server = results.get(("server", model, count, connections))
        is_server = target.startswith(("server", "triton"))
        share = f"{figures['rps'] / floor['rps']:.0%}" if is_server and floor else ""
        share_uvicorn = (
            f"{figures['rps'] / uvicorn_floor['rps']:.0%}" if is_server and uvicorn_floor else ""
        )
        by_cpu = ""
        if is_server and uvicorn_floor and figures.get("cpu_us") and uvicorn_floor.get("cpu_us"):
            by_cpu = f"{uvicorn_floor['cpu_us'] / figures['cpu_us']:.0%}"
        cpu = f"{figures['cpu_us']:.1f}" if figures.get("cpu_us") else ""
        through = ""
        added = ""
        if target == "gateway" and server:
            through = f"{figures['rps'] / server['rps']:.0%}"
            added = f"{(figures['p50'] - server['p50']) * 1e3:.3f}"
        # the version server's matching variant (server for triton, server+batching for
        # triton+batching) divided by Triton, in the same cell
        versus = ""
        rival = results.get((target.replace("triton", "server"), model, count, connections))
        if target.startswith("triton") and rival:
            versus = f"{rival['rps'] / figures['rps']:.2f}"
        print(
            f"| {target} | {model} | {count} | {connections} | {figures['rps']:.0f} | "
            f"{figures['p50'] * 1e3:.3f} | {figures['p99'] * 1e3:.3f} | {cpu} | {share} | "
            f"{share_uvicorn} | {by_cpu} | {through} | {added} | {versus} |"
        )
    print()
    print("peak RSS (MiB): " + ", ".join(f"{name} {value:.0f}" for name, value in rss.items()))
    if mlflow_note:
        print(f"MLflow: {mlflow_note}")
    print()
    print("goals:")
    best_server = ["server"] + ([f"server×{workers}"] if workers > 1 else [])
    best_server += ["server+batching"] if batching else []
    best_server += [f"server×{workers}+batching"] if batching and workers > 1 else []
    for (target, model, count, connections), figures in results.items():
        if target != "floor-uvicorn":
            continue
        servers = {
            name: results[(name, model, count, connections)]["rps"]
            for name in best_server
            if (name, model, count, connections) in results
        }
        line = ", ".join(
            f"{name} {value / figures['rps']:.0%} of the uvicorn floor"
            for name, value in servers.items()
        )
        server_cpu = results.get(("server", model, count, connections), {}).get("cpu_us")
        if server_cpu and figures.get("cpu_us"):
            line += f" ({figures['cpu_us'] / server_cpu:.0%} by CPU per request)"
        tritons = {
            name: results[(name, model, count, connections)]["rps"]
            for name in ("triton", "triton+batching")
            if (name, model, count, connections) in results
        }
        print(f"  {model} rows={count} connections={connections}: {line} (goal >= 60 %)")
        best = max(servers.values())
        if tritons:
            rival = max(tritons.values())
            verdict = "beats" if best > rival else "does not beat"
            print(
                f"    best version server {best:.0f} req/s vs best Triton Python backend "
                f"{rival:.0f} req/s, measured side by side: {best / rival:.2f}×, {verdict} Triton "
                "(goal: beat it on every cell)"
            )
        elif model == "iris" and (count, connections) in TRITON_PYTHON_BACKEND_ISSUE_20:
            print(
                f"    best version server {best:.0f} req/s vs Triton Python backend "
                f"{TRITON_PYTHON_BACKEND_ISSUE_20[(count, connections)]} req/s "
                "(issue 20's figure, not measured here)"
            )


if __name__ == "__main__":
    raise SystemExit(main())
