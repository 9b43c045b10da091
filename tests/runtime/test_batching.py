"""Opt-in dynamic batching: concurrent requests share onnxruntime calls, and each caller still
gets exactly its own answer and its own row count in the metrics."""

from __future__ import annotations

import json
import threading

import numpy as np
import onnxruntime

from tests.runtime.helpers import MLP_INPUTS, metric, request, scrape, start_server


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
