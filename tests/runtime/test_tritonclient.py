"""tritonclient.http works unchanged against the version server and the gateway."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime
import pytest
import tritonclient.http as triton

from tests.runtime.helpers import MLP_INPUTS, iris_rows, put_routes, routes, start_gateway


@pytest.fixture(scope="module")
def triton_gateway(iris_server, mlp_server):
    """A gateway for the iris endpoint, and one for the MLP endpoint."""
    iris_gateway = start_gateway(endpoint="iris")
    mlp_gateway = start_gateway(endpoint="mlp")
    assert put_routes(iris_gateway, routes(("1", iris_server, 100, "primary")))[0] == 200
    assert put_routes(mlp_gateway, routes(("1", mlp_server, 100, "primary")))[0] == 200
    yield {"iris": iris_gateway, "mlp": mlp_gateway}
    iris_gateway.stop()
    mlp_gateway.stop()


def client_for(process) -> triton.InferenceServerClient:
    """A tritonclient pointed at a runtime process."""
    return triton.InferenceServerClient(url=process.url[len("http://") :])


def targets(request, name: str):
    """The version server and the gateway for one model."""
    server = request.getfixturevalue(f"{name}_server")
    gateway = request.getfixturevalue("triton_gateway")[name]
    return [server, gateway]


@pytest.mark.parametrize("through", ["server", "gateway"])
def test_health_and_metadata(request, through):
    process = targets(request, "iris")[through == "gateway"]
    client = client_for(process)
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("iris")
        metadata = client.get_model_metadata("iris")
        assert metadata["platform"] == "onnxruntime"
        assert metadata["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}]
        assert client.get_model_metadata("iris", model_version="1")["versions"] == ["1"]
    finally:
        client.close()


@pytest.mark.parametrize("through", ["server", "gateway"])
@pytest.mark.parametrize("binary", [True, False])
def test_classifier_infer_equals_onnxruntime(request, iris_dir, through, binary):
    process = targets(request, "iris")[through == "gateway"]
    rows = iris_rows(6)
    labels, probabilities = onnxruntime.InferenceSession(str(iris_dir / "model.onnx")).run(
        None, {"X": rows}
    )
    client = client_for(process)
    try:
        tensor = triton.InferInput("X", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows, binary_data=binary)
        outputs = [
            triton.InferRequestedOutput("output_label", binary_data=binary),
            triton.InferRequestedOutput("output_probability", binary_data=binary),
        ]
        result = client.infer("iris", [tensor], outputs=outputs, request_id="triton-1")
        np.testing.assert_array_equal(result.as_numpy("output_label"), labels)
        returned = [
            json.loads(row.decode() if isinstance(row, bytes) else row)
            for row in result.as_numpy("output_probability")
        ]
        assert returned == [{str(k): v for k, v in row.items()} for row in probabilities]
        assert result.get_response()["id"] == "triton-1"
    finally:
        client.close()


@pytest.mark.parametrize("through", ["server", "gateway"])
def test_regressor_infer_with_default_binary_outputs(request, mlp_dir, through):
    process = targets(request, "mlp")[through == "gateway"]
    rows = np.random.default_rng(11).standard_normal((5, MLP_INPUTS)).astype(np.float32)
    (expected,) = onnxruntime.InferenceSession(str(mlp_dir / "model.onnx")).run(None, {"X": rows})
    client = client_for(process)
    try:
        tensor = triton.InferInput("X", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)
        result = client.infer("mlp", [tensor])
        np.testing.assert_array_equal(result.as_numpy("value"), expected)
    finally:
        client.close()


def test_server_errors_surface_as_triton_exceptions(iris_server):
    from tritonclient.utils import InferenceServerException

    client = client_for(iris_server)
    try:
        tensor = triton.InferInput("X", [1, 4], "FP64")
        tensor.set_data_from_numpy(np.zeros((1, 4)))
        with pytest.raises(InferenceServerException, match="model expects FP32"):
            client.infer("iris", [tensor])
    finally:
        client.close()
