"""Opt-in dynamic batching: concurrent requests share onnxruntime calls, and each caller still
gets exactly its own answer and its own row count in the metrics."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import numpy as np
import onnxruntime

from tests.runtime.helpers import (
    MLP_INPUTS,
    metric,
    request,
    run_coroutine,
    scrape,
    start_server,
)


def _infer(url: str, rows: np.ndarray) -> tuple[int, dict]:
    body = {
        "inputs": [
            {"name": "X", "datatype": "FP32", "shape": list(rows.shape),
             "data": rows.ravel().tolist()}
        ],
        "outputs": [{"name": "value"}],
    }  # fmt: skip
    status, _, payload = request("POST", url + "/v2/models/mlp/infer", json.dumps(body).encode())
    return status, json.loads(payload)


def test_concurrent_requests_are_batched_and_answered_exactly(mlp_dir):
    server = start_server(
        mlp_dir, "mlp", "mlp:1", "--batch-max-rows", "32", "--batch-max-delay-us", "20000"
    )
    session = onnxruntime.InferenceSession(str(mlp_dir / "model.onnx"))
    generator = np.random.default_rng(3)
    inputs = [
        generator.standard_normal((1 + index % 3, MLP_INPUTS)).astype(np.float32)
        for index in range(24)
    ]
    answers: dict[int, tuple[int, dict]] = {}
    try:

        def call(index: int) -> None:
            answers[index] = _infer(server.url, inputs[index])

        threads = [threading.Thread(target=call, args=(index,)) for index in range(24)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for index, rows in enumerate(inputs):
            status, answer = answers[index]
            assert status == 200
            (output,) = answer["outputs"]
            expected = session.run(["value"], {"X": rows})[0]
            assert output["shape"] == list(expected.shape)
            assert np.array_equal(np.array(output["data"], dtype=np.float32), expected.ravel())
        samples = scrape(server.url)
        total_rows = sum(rows.shape[0] for rows in inputs)
        assert metric(samples, "modeldeck_requests_total", outcome="success") == 24
        assert metric(samples, "modeldeck_batch_rows_count") == 24
        assert metric(samples, "modeldeck_batch_rows_sum") == total_rows
        calls = metric(samples, "modeldeck_inference_duration_seconds_count")
        assert calls < 24, "no request shared an onnxruntime call"
        assert metric(samples, "modeldeck_feature_value_count") == total_rows * 32
        # a request alone still runs after the delay
        assert _infer(server.url, inputs[0])[0] == 200
    finally:
        server.stop()


def test_a_bad_request_in_a_batch_fails_alone(mlp_dir):
    server = start_server(
        mlp_dir, "mlp", "mlp:1", "--batch-max-rows", "64", "--batch-max-delay-us", "20000"
    )
    good = np.ones((1, MLP_INPUTS), dtype=np.float32)
    answers: dict[str, int] = {}
    try:

        def call(name: str, rows: np.ndarray) -> None:
            answers[name] = _infer(server.url, rows)[0]

        threads = [threading.Thread(target=call, args=(f"good{i}", good)) for i in range(6)]
        # a row of a different width is refused before batching (400), never merged
        threads.append(
            threading.Thread(target=call, args=("bad", np.ones((1, 7), dtype=np.float32)))
        )
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert answers.pop("bad") == 400
        assert set(answers.values()) == {200}
    finally:
        server.stop()


def test_when_a_merged_run_fails_each_request_runs_alone(tmp_path):
    """Gather with an out-of-range index fails in onnxruntime: only that caller gets the error."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.arange(10, dtype=np.float32).reshape(5, 2), "table")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "index"], ["value"], axis=0)],
        "lookup",
        [helper.make_tensor_value_info("index", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("value", TensorProto.FLOAT, ["batch", 2])],
        initializer=[table],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "model.onnx")
    server = start_server(
        tmp_path, "lookup", "lookup:1", "--batch-max-rows", "64", "--batch-max-delay-us", "50000"
    )
    answers: dict[int, tuple[int, dict]] = {}
    try:

        def call(index: int) -> None:
            body = {"inputs": [{"name": "index", "datatype": "INT64", "shape": [1],
                                "data": [index]}]}  # fmt: skip
            status, _, payload = request(
                "POST", server.url + "/v2/models/lookup/infer", json.dumps(body).encode()
            )
            answers[index] = (status, json.loads(payload))

        threads = [threading.Thread(target=call, args=(index,)) for index in (0, 1, 99, 3, 4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert answers.pop(99)[0] == 500
        for index, (status, answer) in answers.items():
            assert status == 200
            assert answer["outputs"][0]["data"] == [2.0 * index, 2.0 * index + 1]
        samples = scrape(server.url)
        assert metric(samples, "modeldeck_batch_rows_count") == 4
    finally:
        server.stop()


def test_with_no_delay_a_batch_holds_the_requests_of_one_event_loop_turn():
    """Delay 0: requests submitted in the same turn of the loop share one run; one submitted
    after that turn runs on its own, and nobody waits for a timer."""
    from modeldeck_runtime.batching import Batcher

    runs: list[int] = []
    recorded: list[list[int]] = []

    async def run(feeds):
        runs.append(feeds["X"].shape[0])
        return {"double": feeds["X"] * 2}, 0.0

    async def scenario() -> list[tuple[np.ndarray | None, Exception | None]]:
        loop = asyncio.get_running_loop()
        batcher = Batcher(run, lambda f, o, rows, s: recorded.append(rows), 64, 0.0)
        answers: list[tuple[np.ndarray | None, Exception | None]] = [None] * 4  # type: ignore[list-item]
        done = [loop.create_future() for _ in range(4)]

        def answer(index: int):
            def deliver(outputs, error):
                answers[index] = (None if outputs is None else outputs["double"], error)
                done[index].set_result(None)

            return deliver

        for index in range(3):
            batcher.submit(
                {"X": np.full((index + 1, 2), index, dtype=np.float32)}, index + 1, answer(index)
            )
        await asyncio.gather(*done[:3])
        batcher.submit({"X": np.full((1, 2), 7, dtype=np.float32)}, 1, answer(3))
        await done[3]
        return answers

    started = time.perf_counter()
    answers = run_coroutine(scenario(), timeout=30)
    assert runs == [6, 1]
    assert recorded == [[1, 2, 3], [1]]
    for index in range(3):
        outputs, error = answers[index]
        assert error is None
        assert np.array_equal(outputs, np.full((index + 1, 2), 2 * index, dtype=np.float32))
    assert np.array_equal(answers[3][0], np.full((1, 2), 14, dtype=np.float32))
    assert time.perf_counter() - started < 5


def test_with_no_delay_concurrent_connections_share_runs_and_get_their_own_answers(mlp_dir):
    server = start_server(
        mlp_dir, "mlp", "mlp:1", "--batch-max-rows", "64", "--batch-max-delay-us", "0"
    )
    session = onnxruntime.InferenceSession(str(mlp_dir / "model.onnx"))
    generator = np.random.default_rng(11)
    try:
        sent = 0
        for _attempt in range(5):
            # 16 connections each send all of a request but its last byte; then the last bytes
            # go out together, so the server finds several requests complete in one read.
            inputs = [
                generator.standard_normal((1, MLP_INPUTS)).astype(np.float32) for _ in range(16)
            ]
            bodies = [
                json.dumps(
                    {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, MLP_INPUTS],
                                 "data": rows.ravel().tolist()}],
                     "outputs": [{"name": "value"}]}
                ).encode()
                for rows in inputs
            ]  # fmt: skip
            raws = [
                b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body)
                for body in bodies
            ]
            connections = [
                socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in raws
            ]
            try:
                for connection, raw in zip(connections, raws, strict=True):
                    connection.sendall(raw[:-1])
                time.sleep(0.2)
                for connection, raw in zip(connections, raws, strict=True):
                    connection.sendall(raw[-1:])
                for connection, rows in zip(connections, inputs, strict=True):
                    buffer = b""
                    while b"\r\n\r\n" not in buffer or not buffer.endswith(b"}"):
                        chunk = connection.recv(65536)
                        assert chunk
                        buffer += chunk
                    head, _, payload = buffer.partition(b"\r\n\r\n")
                    assert head.startswith(b"HTTP/1.1 200 OK")
                    (output,) = json.loads(payload)["outputs"]
                    expected = session.run(["value"], {"X": rows})[0]
                    assert np.array_equal(
                        np.array(output["data"], dtype=np.float32), expected.ravel()
                    )
            finally:
                for connection in connections:
                    connection.close()
            sent += len(raws)
            samples = scrape(server.url)
            if metric(samples, "modeldeck_inference_duration_seconds_count") < sent:
                break
        assert metric(samples, "modeldeck_requests_total", outcome="success") == sent
        assert metric(samples, "modeldeck_batch_rows_count") == sent
        calls = metric(samples, "modeldeck_inference_duration_seconds_count")
        assert calls < sent, "no two requests shared an onnxruntime call"
    finally:
        server.stop()
