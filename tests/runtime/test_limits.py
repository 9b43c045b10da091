"""Attacks on a live version server's HTTP layer and memory: each limit answers with its status,
and the server then answers health checks within its own baseline latency."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import onnx
import pytest
from onnx import TensorProto, helper

from tests.runtime.helpers import (
    RuntimeProcess,
    median_health_seconds,
    post_json,
    request,
    rss_megabytes,
    start_server,
    stays_healthy,
)

LIMITS = (
    "--max-request-line-bytes", "4096",
    "--max-header-bytes", "16384",
    "--max-headers", "40",
    "--header-timeout", "1",
    "--idle-timeout", "1",
    "--max-connections", "12",
)  # fmt: skip


@pytest.fixture(scope="module")
def guarded(iris_dir) -> Iterator[RuntimeProcess]:
    server = start_server(iris_dir, "iris", "1", *LIMITS)
    yield server
    server.stop()


def connect(process: RuntimeProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", process.port), timeout=10)


def read_answer(connection: socket.socket) -> tuple[int, bytes]:
    """Read until the server closes; the status and body of its one answer."""
    data = b""
    try:
        while chunk := connection.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    head, _, body = data.partition(b"\r\n\r\n")
    assert head, "the server closed without answering"
    assert b"connection: close" in head.lower()
    return int(head.split(b" ", 2)[1]), body


def send_until_answered(connection: socket.socket, chunks: Iterator[bytes]) -> int:
    """Send chunks until the server stops reading; how many bytes went out."""
    sent = 0
    try:
        for chunk in chunks:
            connection.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    return sent


def test_a_long_request_line_is_414_even_when_it_keeps_coming(guarded):
    baseline = median_health_seconds(guarded.url)
    connection = connect(guarded)
    # 48 MiB of request target, sent as fast as the server reads it
    chunks = iter([b"GET /v2/health/live?q="] + [b"a" * 65536] * 768)
    sent = send_until_answered(connection, chunks)
    status, body = read_answer(connection)
    connection.close()
    assert status == 414
    assert "longer than the limit of 4096 bytes" in json.loads(body)["error"]
    assert sent < 48 * 1024 * 1024
    stays_healthy(guarded.url, baseline)


def test_too_many_header_bytes_is_431(guarded):
    baseline = median_health_seconds(guarded.url)
    before = rss_megabytes(guarded.process.pid)
    connection = connect(guarded)
    chunks = iter([b"GET /v2/health/live HTTP/1.1\r\nX-Big: "] + [b"b" * 65536] * 4800)
    sent = send_until_answered(connection, chunks)  # up to 300 MiB of one header
    status, body = read_answer(connection)
    connection.close()
    assert status == 431
    assert "larger than the limit of 16384 bytes" in json.loads(body)["error"]
    assert sent < 300 * 1024 * 1024
    assert rss_megabytes(guarded.process.pid) - before < 16
    stays_healthy(guarded.url, baseline)


def test_too_many_headers_is_431(guarded):
    baseline = median_health_seconds(guarded.url)
    connection = connect(guarded)
    headers = b"".join(b"X-H%d: v\r\n" % number for number in range(41))
    connection.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    status, body = read_answer(connection)
    connection.close()
    assert status == 431 and "more than the limit of 40 headers" in json.loads(body)["error"]
    # 39 headers (plus Host) are fine
    fine = {f"X-H{number}": "v" for number in range(38)}
    assert request("GET", guarded.url + "/v2/health/live", headers=fine)[0] == 200
    stays_healthy(guarded.url, baseline)


def test_a_slow_request_head_is_408_however_steadily_it_trickles(guarded):
    baseline = median_health_seconds(guarded.url)
    connection = connect(guarded)
    started = time.monotonic()
    connection.sendall(b"GET /v2/health/live HTTP/1.1\r\n")
    closed = False
    for number in range(40):  # one header every 0.1 s, well inside the idle timeout
        try:
            connection.sendall(b"X-Slow-%d: v\r\n" % number)
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        time.sleep(0.1)
    status, body = read_answer(connection)
    connection.close()
    assert status == 408 and "did not arrive in time" in json.loads(body)["error"]
    assert closed or time.monotonic() - started < 4
    stays_healthy(guarded.url, baseline)


def test_an_idle_connection_is_closed_after_the_idle_timeout(guarded):
    connection = connect(guarded)
    connection.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    assert connection.recv(65536).startswith(b"HTTP/1.1 200")
    connection.settimeout(5)
    started = time.monotonic()
    assert connection.recv(65536) == b""  # closed by the server
    assert time.monotonic() - started < 4
    connection.close()


def test_connections_beyond_the_limit_get_503(guarded):
    baseline = median_health_seconds(guarded.url)
    held = [connect(guarded) for _ in range(12)]
    try:
        time.sleep(0.2)
        extra = connect(guarded)
        status, body = read_answer(extra)
        extra.close()
        assert status == 503 and "too many connections" in json.loads(body)["error"]
    finally:
        for connection in held:
            connection.close()
    time.sleep(0.2)
    stays_healthy(guarded.url, baseline)


@pytest.fixture(scope="module")
def tiling_dir(tmp_path_factory) -> Iterator:
    """y = Tile(x, repeats): the output's size is chosen by an input value (as in the issue)."""
    graph = helper.make_graph(
        [helper.make_node("Tile", ["x", "repeats"], ["y"])],
        "tiling",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1]),
            helper.make_tensor_value_info("repeats", TensorProto.INT64, [1]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    folder = tmp_path_factory.mktemp("tiling")
    onnx.save(model, folder / "model.onnx")
    return folder


def tile(process: RuntimeProcess, repeats: int) -> tuple[int, dict]:
    body = {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1], "data": [1.5]},
            {"name": "repeats", "datatype": "INT64", "shape": [1], "data": [repeats]},
        ],
    }
    return post_json(process.url + "/v2/models/tiling/infer", body)


def test_outputs_beyond_the_limit_are_507_and_memory_is_capped(tiling_dir):
    server = start_server(
        tiling_dir,
        "tiling",
        "1",
        "--memory-limit-mb", "1536",
        "--max-output-bytes", str(8 * 1024 * 1024),
    )  # fmt: skip
    try:
        baseline = median_health_seconds(server.url)
        assert tile(server, 1000)[0] == 200
        status, answer = tile(server, 4 * 1024 * 1024)  # 16 MiB of output
        assert status == 507 and "more than the limit of 8388608 bytes" in answer["error"]
        for repeats in (2**29, 2**31):  # 2 GiB: past the address-space limit; 8 GiB
            status, answer = tile(server, repeats)
            assert status == 507 and "more memory than this server may use" in answer["error"]
        assert server.process.poll() is None
        assert tile(server, 1000)[0] == 200
        stays_healthy(server.url, baseline)
        with open(f"/proc/{server.process.pid}/limits") as handle:
            line = next(line for line in handle if line.startswith("Max address space"))
        assert str(1536 * 1024 * 1024) in line
    finally:
        server.stop()


def test_memory_limit_comes_from_the_environment_too(tiling_dir, monkeypatch):
    monkeypatch.setenv("MODELDECK_MEMORY_LIMIT_MB", "2048")
    server = start_server(tiling_dir, "tiling", "1")
    try:
        with open(f"/proc/{server.process.pid}/limits") as handle:
            line = next(line for line in handle if line.startswith("Max address space"))
        assert str(2048 * 1024 * 1024) in line
        assert tile(server, 3)[1]["outputs"][0]["data"] == [1.5, 1.5, 1.5]
    finally:
        server.stop()
