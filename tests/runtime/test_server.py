"""The version server against real models: answers, metadata, validation, limits, headers."""

from __future__ import annotations

import json
import re
import uuid

import numpy as np
import onnxruntime
import pytest

from tests.runtime.helpers import MLP_INPUTS, post_json, request, start_server

IRIS_INFER = "/v2/models/iris/infer"


def v2_input(data, shape, name="X", datatype="FP32"):
    """A v2 request with one input."""
    return {"inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": data}]}


def is_uuid4_hex(text: str) -> bool:
    """Whether text is a uuid4 in 32 hex digits."""
    return re.fullmatch(r"[0-9a-f]{32}", text) is not None and uuid.UUID(text).version == 4


def raw_session(model_dir) -> onnxruntime.InferenceSession:
    """The same model in plain onnxruntime, for reference answers."""
    return onnxruntime.InferenceSession(
        str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )


def test_health_and_server_metadata(iris_server):
    assert request("GET", iris_server.url + "/v2/health/live")[0] == 200
    assert request("GET", iris_server.url + "/v2/health/ready")[0] == 200
    assert request("GET", iris_server.url + "/v2/models/iris/ready")[0] == 200
    status, _, payload = request("GET", iris_server.url + "/v2")
    assert status == 200
    assert json.loads(payload)["name"] == "modeldeck-runtime"


def test_model_metadata_lists_signature_with_dynamic_dimensions(iris_server):
    expected = {
        "name": "iris",
        "versions": ["1"],
        "platform": "onnxruntime",
        "inputs": [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [
            {"name": "output_label", "datatype": "INT64", "shape": [-1]},
            {"name": "output_probability", "datatype": "BYTES", "shape": [-1]},
        ],
    }
    for path in ("/v2/models/iris", "/v2/models/iris/versions/1"):
        status, _, payload = request("GET", iris_server.url + path)
        assert status == 200
        assert json.loads(payload) == expected


def test_classifier_labels_and_probabilities_equal_onnxruntime(iris_server, iris_dir):
    rows = np.array(
        [[5.1, 3.5, 1.4, 0.2], [6.0, 2.7, 5.1, 1.6], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32
    )
    labels, probabilities = raw_session(iris_dir).run(None, {"X": rows})
    document = v2_input(rows.ravel().tolist(), [3, 4]) | {"id": "request-7"}
    for path in (IRIS_INFER, "/v2/models/iris/versions/1/infer"):
        status, answer = post_json(iris_server.url + path, document)
        assert status == 200, answer
        assert answer["id"] == "request-7"
        assert answer["model_name"] == "iris"
        assert answer["model_version"] == "1"
        label_output, probability_output = answer["outputs"]
        assert label_output == {
            "name": "output_label",
            "datatype": "INT64",
            "shape": [3],
            "data": labels.tolist(),
        }
        assert probability_output["datatype"] == "BYTES"
        assert probability_output["parameters"] == {"content_type": "json"}
        returned = [json.loads(row) for row in probability_output["data"]]
        assert returned == [{str(k): v for k, v in row.items()} for row in probabilities]


def test_outputs_filter_returns_only_requested_outputs(iris_server):
    document = v2_input([5.1, 3.5, 1.4, 0.2], [1, 4]) | {"outputs": [{"name": "output_label"}]}
    status, answer = post_json(iris_server.url + IRIS_INFER, document)
    assert status == 200
    assert [output["name"] for output in answer["outputs"]] == ["output_label"]


def test_regressor_outputs_equal_onnxruntime_bit_exactly(mlp_server, mlp_dir):
    rows = np.random.default_rng(3).standard_normal((16, MLP_INPUTS)).astype(np.float32)
    (expected,) = raw_session(mlp_dir).run(None, {"X": rows})
    status, answer = post_json(
        mlp_server.url + "/v2/models/mlp/infer", v2_input(rows.tolist(), [16, MLP_INPUTS])
    )
    assert status == 200
    (output,) = answer["outputs"]
    assert output["shape"] == [16, 1]
    returned = np.array(output["data"], dtype=np.float32).reshape(16, 1)
    np.testing.assert_array_equal(returned.view(np.uint32), expected.view(np.uint32))


def test_invocations_answers_named_outputs(iris_server, iris_dir):
    rows = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
    labels, probabilities = raw_session(iris_dir).run(None, {"X": rows})
    status, answer = post_json(iris_server.url + "/invocations", {"inputs": {"X": rows.tolist()}})
    assert status == 200
    assert answer["outputs"]["output_label"] == labels.tolist()
    assert answer["outputs"]["output_probability"] == [
        {str(k): v for k, v in row.items()} for row in probabilities
    ]


def test_invocations_accepts_one_row_without_batch_dimension(iris_server, iris_dir):
    row = np.array([6.7, 3.0, 5.2, 2.3], dtype=np.float32)
    (labels,) = raw_session(iris_dir).run(["output_label"], {"X": row[None, :]})
    status, answer = post_json(iris_server.url + "/invocations", {"inputs": {"X": row.tolist()}})
    assert status == 200
    assert answer["outputs"]["output_label"] == labels.tolist()


def test_request_id_is_echoed_when_sane_and_generated_otherwise(iris_server):
    body = json.dumps(v2_input([5.1, 3.5, 1.4, 0.2], [1, 4])).encode()
    _, headers, _ = request("POST", iris_server.url + IRIS_INFER, body, {"X-Request-Id": "a.b_c-1"})
    assert headers["x-request-id"] == "a.b_c-1"
    assert headers["x-model-version"] == "1"
    for insane in ("has space", "x" * 129, "semi;colon"):
        _, headers, _ = request(
            "POST", iris_server.url + IRIS_INFER, body, {"X-Request-Id": insane}
        )
        assert is_uuid4_hex(headers["x-request-id"])
    _, headers, _ = request("GET", iris_server.url + "/v2/health/ready")
    assert is_uuid4_hex(headers["x-request-id"])
    assert headers["x-model-version"] == "1"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            v2_input([1, 2, 3, 4], [1, 4], name="Y"),
            "unknown input 'Y'; the model's inputs are: X",
        ),
        ({"inputs": []}, "request must have a non-empty 'inputs' list"),
        (
            v2_input([1, 2, 3, 4], [1, 4], datatype="FP64"),
            "input 'X' has datatype FP64 but the model expects FP32",
        ),
        (
            v2_input([1, 2, 3, 4, 5], [1, 5]),
            "input 'X' has shape [1, 5] but the model expects [-1, 4]",
        ),
        (v2_input([1, 2, 3, 4], [4]), "input 'X' has shape [4] but the model expects [-1, 4]"),
        (v2_input([1, 2, 3], [1, 4]), "input 'X' has 3 values but shape [1, 4] needs 4"),
        (
            v2_input([1, 2, 3, 4], [1, 4], datatype="FLOAT"),
            "input 'X' has unsupported datatype 'FLOAT'",
        ),
        (
            v2_input([1, 2, 3, 4], [1, 4]) | {"outputs": [{"name": "nope"}]},
            "unknown output 'nope'; the model's outputs are: output_label, output_probability",
        ),
        (
            {"inputs": [v2_input([1, 2, 3, 4], [1, 4])["inputs"][0]] * 2},
            "input 'X' is given more than once",
        ),
        ([1, 2], "request body must be a JSON object"),
        (
            v2_input(["a", "b", "c", "d"], [1, 4]),
            "input 'X' data must be numbers for datatype FP32",
        ),
    ],
)
def test_invalid_v2_requests_are_refused_with_readable_errors(iris_server, document, message):
    status, answer = post_json(iris_server.url + IRIS_INFER, document)
    assert status == 400
    assert answer == {"error": message}


def test_missing_input_is_named(identity_server):
    document = v2_input([[1, 2, 3]], [1, 3], name="in_INT32", datatype="INT32")
    status, answer = post_json(identity_server.url + "/v2/models/identity/infer", document)
    assert status == 400
    assert answer == {"error": "missing input 'in_BOOL'"}


def test_malformed_json_is_refused(iris_server):
    status, _, payload = request("POST", iris_server.url + IRIS_INFER, b'{"inputs": [')
    assert status == 400
    assert json.loads(payload) == {"error": "request body is not valid JSON"}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"inputs": {"Y": [[1, 2, 3, 4]]}}, "unknown input 'Y'; the model's inputs are: X"),
        (
            {"inputs": {"X": [[1, 2, 3]]}},
            "input 'X' has shape [1, 3] but the model expects [-1, 4]",
        ),
        ({"outputs": {}}, "request must have a non-empty 'inputs' object"),
    ],
)
def test_invalid_invocations_are_refused(iris_server, document, message):
    status, answer = post_json(iris_server.url + "/invocations", document)
    assert status == 400
    assert answer == {"error": message}


def test_row_cap_is_enforced(mlp_server):
    rows = np.zeros((65, MLP_INPUTS), dtype=np.float32)
    status, answer = post_json(
        mlp_server.url + "/v2/models/mlp/infer", v2_input([], [65, MLP_INPUTS])
    )
    assert status == 400
    assert answer == {"error": "input 'X' has 65 rows, more than the limit of 64"}
    status, answer = post_json(mlp_server.url + "/invocations", {"inputs": {"X": rows.tolist()}})
    assert status == 400
    assert answer == {"error": "input 'X' has 65 rows, more than the limit of 64"}


def test_body_over_the_cap_is_refused_with_413(mlp_server):
    message = {"error": "request body is larger than the limit of 65536 bytes"}
    status, _, payload = request(
        "POST", mlp_server.url + "/v2/models/mlp/infer", b"[" + b"0," * 40000 + b"0]"
    )
    assert status == 413
    assert json.loads(payload) == message


def test_chunked_body_over_the_cap_is_refused_with_413(mlp_server):
    def chunks():
        for _ in range(100):
            yield b" " * 1024

    import http.client

    connection = http.client.HTTPConnection(mlp_server.url[len("http://") :], timeout=10)
    try:
        connection.request("POST", "/v2/models/mlp/infer", body=chunks(), encode_chunked=True)
        response = connection.getresponse()
        assert response.status == 413
        assert json.loads(response.read()) == {
            "error": "request body is larger than the limit of 65536 bytes"
        }
    finally:
        connection.close()


def test_unknown_model_version_and_route_answer_404(iris_server):
    cases = {
        "/v2/models/other": "unknown model 'other'; this server serves 'iris'",
        "/v2/models/iris/versions/9/infer": (
            "model 'iris' has no version '9'; versions that exist: 1"
        ),
        "/nowhere": "no route for /nowhere",
    }
    for path, message in cases.items():
        status, headers, payload = request("GET", iris_server.url + path)
        assert status == 404
        assert json.loads(payload) == {"error": message}
        assert headers["x-model-version"] == "1"


def test_pinning_another_version_at_a_server_answers_404(iris_server):
    body = json.dumps(v2_input([5.1, 3.5, 1.4, 0.2], [1, 4])).encode()
    status, _, payload = request(
        "POST", iris_server.url + IRIS_INFER, body, {"X-Model-Version": "2"}
    )
    assert status == 404
    assert json.loads(payload) == {
        "error": "model 'iris' has no version '2'; versions that exist: 1"
    }
    status, _, _ = request("POST", iris_server.url + IRIS_INFER, body, {"X-Model-Version": "1"})
    assert status == 200


def test_wrong_method_answers_405(iris_server):
    status, _, payload = request("GET", iris_server.url + IRIS_INFER)
    assert status == 405
    assert json.loads(payload) == {"error": "method GET is not allowed on /v2/models/iris/infer"}


def test_server_with_broken_model_exits_with_an_error(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(RuntimeError, match="exited early"):
        start_server(tmp_path, "broken", "1")
