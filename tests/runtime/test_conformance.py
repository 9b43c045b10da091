"""Protocol conformance with tritonclient: versioned routes through a split gateway, NaN and
±Infinity in JSON mode, gzip and deflate both ways, and a decompression bomb."""

from __future__ import annotations

import gzip
import json
import math
import zlib
from collections.abc import Iterator

import numpy as np
import onnx
import pytest
import tritonclient.http as triton
from modeldeck_runtime.codec import RequestError, decode_values
from onnx import TensorProto, helper
from tritonclient.utils import InferenceServerException

from tests.runtime.helpers import (
    RuntimeProcess,
    iris_rows,
    median_health_seconds,
    put_routes,
    request,
    routes,
    rss_megabytes,
    start_gateway,
    start_server,
    stays_healthy,
)

FLOATS = (("FP32", np.float32), ("FP64", np.float64), ("FP16", np.float16))
NON_FINITE = np.array([[np.nan, np.inf, -np.inf], [1.5, -0.0, 3.25e-8]])


@pytest.fixture(scope="module")
def split(iris_dir) -> Iterator[dict[str, RuntimeProcess]]:
    """Two versions of iris named by full reference, 50/50 behind one gateway."""
    first = start_server(iris_dir, "iris", "iris:1", endpoint="iris")
    second = start_server(iris_dir, "iris", "iris:2", endpoint="iris")
    gateway = start_gateway(endpoint="iris")
    table = routes(("iris:1", first, 50, "primary"), ("iris:2", second, 50, "candidate"))
    assert put_routes(gateway, table)[0] == 200
    yield {"v1": first, "v2": second, "gateway": gateway}
    for process in (gateway, first, second):
        process.stop()


@pytest.fixture(scope="module")
def float_server(tmp_path_factory) -> Iterator[RuntimeProcess]:
    """One Identity per float datatype (in_FP32 -> out_FP32, ...), shape [batch, 3]."""
    kinds = {"FP32": TensorProto.FLOAT, "FP64": TensorProto.DOUBLE, "FP16": TensorProto.FLOAT16}
    graph = helper.make_graph(
        [helper.make_node("Identity", [f"in_{name}"], [f"out_{name}"]) for name in kinds],
        "floats",
        [helper.make_tensor_value_info(f"in_{n}", kind, ["batch", 3]) for n, kind in kinds.items()],
        [
            helper.make_tensor_value_info(f"out_{n}", kind, ["batch", 3])
            for n, kind in kinds.items()
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder = tmp_path_factory.mktemp("floats")
    onnx.save(model, folder / "model.onnx")
    server = start_server(folder, "floats", "floats:1", endpoint="floats")
    yield server
    server.stop()


def client_for(process: RuntimeProcess) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=process.url[len("http://") :])


def iris_inputs(binary: bool = False) -> list[triton.InferInput]:
    tensor = triton.InferInput("X", [4, 4], "FP32")
    tensor.set_data_from_numpy(iris_rows(4), binary_data=binary)
    return [tensor]


@pytest.mark.parametrize("name", ["1", "2", "iris:1", "iris:2"])
def test_versioned_infer_through_a_split_gateway_always_reaches_that_version(split, name):
    client = client_for(split["gateway"])
    served = "iris:" + name.rpartition(":")[2]
    try:
        for _ in range(12):
            result = client.infer("iris", iris_inputs(), model_version=name)
            assert result.get_response()["model_version"] == served
            assert result.as_numpy("output_label").shape == (4,)
        assert client.is_model_ready("iris", model_version=name)
        metadata = client.get_model_metadata("iris", model_version=name)
        assert metadata["versions"] == [served]
    finally:
        client.close()


def test_unversioned_calls_are_still_split(split):
    client = client_for(split["gateway"])
    try:
        seen = {
            client.infer("iris", iris_inputs()).get_response()["model_version"] for _ in range(40)
        }
    finally:
        client.close()
    assert seen == {"iris:1", "iris:2"}


@pytest.mark.parametrize("through", ["v1", "gateway"])
def test_unknown_version_is_404_listing_the_versions_that_exist(split, through):
    client = client_for(split[through])
    try:
        with pytest.raises(InferenceServerException) as raised:
            client.infer("iris", iris_inputs(), model_version="7")
        assert raised.value.status() == "404"
        listed = "iris:1, iris:2" if through == "gateway" else "iris:1"
        assert listed in raised.value.message()
        assert not client.is_model_ready("iris", model_version="other:1")
    finally:
        client.close()
    status, _, payload = request("GET", split[through].url + "/v2/models/iris/versions/3/ready")
    assert status == 404 and listed in json.loads(payload)["error"]


def test_version_named_by_number_or_reference_gives_the_same_metrics_label(split):
    client = client_for(split["v2"])
    try:
        client.infer("iris", iris_inputs(), model_version="2")
        client.infer("iris", iris_inputs(), model_version="iris:2")
    finally:
        client.close()
    _, _, metrics = request("GET", split["v2"].url + "/metrics")
    lines = [line for line in metrics.decode().splitlines() if "modeldeck_requests_total{" in line]
    assert lines and all('version="iris:2"' in line for line in lines)
    success = next(line for line in lines if 'outcome="success"' in line)
    assert float(success.rsplit(" ", 1)[1]) >= 2


@pytest.mark.parametrize("path", ["/v2/health/live", "/v2/health/ready"])
def test_health_routes_answer_the_same_methods_on_server_and_gateway(split, path):
    answers = {}
    for through in ("v1", "gateway"):
        url = split[through].url + path
        answers[through] = [
            (method, request(method, url)[0]) for method in ("GET", "HEAD", "POST", "PUT")
        ]
        assert request("POST", url)[1]["allow"] == "GET, HEAD"
    assert answers["v1"] == answers["gateway"]
    assert answers["v1"] == [("GET", 200), ("HEAD", 200), ("POST", 405), ("PUT", 405)]


def test_head_on_proxied_metadata_answers_the_head_quickly(split):
    for through in ("v1", "gateway"):
        status, headers, body = request(
            "HEAD", split[through].url + "/v2/models/iris/versions/1", timeout=5
        )
        assert status == 200 and body == b"" and int(headers["content-length"]) > 0


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("through", ["server", "gateway"])
def test_nan_and_infinity_round_trip_exactly(float_server, through, binary):
    gateway = None
    process = float_server
    if through == "gateway":
        gateway = start_gateway(endpoint="floats")
        assert put_routes(gateway, routes(("floats:1", float_server, 100, "primary")))[0] == 200
        process = gateway
    client = client_for(process)
    try:
        inputs, outputs = [], []
        for datatype, dtype in FLOATS:
            tensor = triton.InferInput(f"in_{datatype}", [2, 3], datatype)
            tensor.set_data_from_numpy(NON_FINITE.astype(dtype), binary_data=binary)
            inputs.append(tensor)
            outputs.append(triton.InferRequestedOutput(f"out_{datatype}", binary_data=binary))
        result = client.infer("floats", inputs, outputs=outputs)
        for datatype, dtype in FLOATS:
            answer = result.as_numpy(f"out_{datatype}")
            expected = NON_FINITE.astype(dtype)
            assert answer.dtype == dtype
            assert np.array_equal(answer, expected, equal_nan=True)
            assert np.array_equal(np.signbit(answer), np.signbit(expected))
    finally:
        client.close()
        if gateway is not None:
            gateway.stop()


def test_nan_tokens_in_raw_json_match_what_python_and_triton_write(float_server):
    row = [[math.nan, math.inf, -math.inf]]
    body = json.dumps(
        {
            "inputs": [
                {"name": f"in_{name}", "datatype": name, "shape": [1, 3], "data": row}
                for name, _ in FLOATS
            ],
            "outputs": [{"name": "out_FP64"}],
        }
    ).encode()
    assert b"NaN" in body and b"-Infinity" in body
    status, _, payload = request("POST", float_server.url + "/v2/models/floats/infer", body)
    assert status == 200
    assert b'"data":[NaN,Infinity,-Infinity]' in payload
    data = json.loads(payload)["outputs"][0]["data"]
    assert math.isnan(data[0]) and data[1:] == [math.inf, -math.inf]
    # /invocations writes them the same way
    status, _, payload = request(
        "POST",
        float_server.url + "/invocations",
        json.dumps({"inputs": {f"in_{name}": row for name, _ in FLOATS}}).encode(),
    )
    assert status == 200 and payload.count(b"[[NaN,Infinity,-Infinity]]") == 3


def test_integer_inputs_still_refuse_non_finite_values():
    with pytest.raises(RequestError) as raised:
        decode_values("x", "INT64", [math.nan, 1.0])
    assert "integers" in raised.value.message


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
@pytest.mark.parametrize("through", ["v1", "gateway"])
def test_compression_both_ways_with_tritonclient(split, through, algorithm):
    client = client_for(split[through])
    try:
        plain = client.infer("iris", iris_inputs(), model_version="1")
        for binary in (False, True):
            result = client.infer(
                "iris",
                iris_inputs(binary),
                model_version="1",
                outputs=[triton.InferRequestedOutput("output_label", binary_data=binary)],
                request_compression_algorithm=algorithm,
                response_compression_algorithm=algorithm,
            )
            assert np.array_equal(result.as_numpy("output_label"), plain.as_numpy("output_label"))
    finally:
        client.close()
    body = json.dumps(
        {
            "inputs": [
                {"name": "X", "datatype": "FP32", "shape": [2, 4], "data": iris_rows(2).tolist()}
            ]
        }
    ).encode()
    compressed = gzip.compress(body) if algorithm == "gzip" else zlib.compress(body)
    status, headers, payload = request(
        "POST",
        split[through].url + "/v2/models/iris/versions/1/infer",
        compressed,
        {"Content-Encoding": algorithm, "Accept-Encoding": f"br;q=1, {algorithm};q=0.5"},
    )
    assert status == 200 and headers["content-encoding"] == algorithm
    decoded = gzip.decompress(payload) if algorithm == "gzip" else zlib.decompress(payload)
    assert json.loads(decoded)["model_version"] == "iris:1"
    status, headers, payload = request(
        "POST", split[through].url + "/v2/models/iris/versions/1/infer", body
    )
    assert status == 200 and "content-encoding" not in headers and json.loads(payload)


@pytest.mark.parametrize("through", ["v1", "gateway"])
def test_unsupported_or_broken_coding_is_refused_clearly(split, through):
    url = split[through].url + "/v2/models/iris/versions/1/infer"
    status, _, payload = request("POST", url, b"\x00" * 20, {"Content-Encoding": "br"})
    assert status == 415 and "gzip or deflate" in json.loads(payload)["error"]
    status, _, payload = request("POST", url, b"not gzip at all", {"Content-Encoding": "gzip"})
    assert status == 400 and "not valid gzip" in json.loads(payload)["error"]


def test_a_decompression_bomb_is_413_and_the_server_stays_healthy(iris_dir):
    limit = 1 << 20
    server = start_server(iris_dir, "iris", "1", "--max-body-bytes", str(limit))
    gateway = start_gateway("--max-body-bytes", str(limit))
    try:
        assert put_routes(gateway, routes(("1", server, 100, "primary")))[0] == 200
        compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
        zeros = b"0" * (1 << 20)
        bomb = b"".join(compressor.compress(zeros) for _ in range(256)) + compressor.flush()
        assert len(bomb) < limit // 2  # 256 MiB inflated, well under the body limit on the wire
        before = rss_megabytes(server.process.pid)
        for process in (server, gateway):
            baseline = median_health_seconds(process.url)
            status, _, payload = request(
                "POST",
                process.url + "/v2/models/iris/infer",
                bomb,
                {"Content-Encoding": "gzip"},
                timeout=30,
            )
            assert status == 413
            assert "inflates to more than the limit" in json.loads(payload)["error"]
            stays_healthy(process.url, baseline)
        grown = rss_megabytes(server.process.pid) - before
        assert grown < 32, f"the server grew by {grown:.0f} MiB inflating the bomb"
    finally:
        gateway.stop()
        server.stop()
