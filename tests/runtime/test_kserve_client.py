"""KServe's own v2 client against the version server and a split gateway.

KServe's client writes and reads JSON with orjson, which has no NaN or Infinity: in JSON mode it
sends them as null and cannot read Triton's NaN/Infinity tokens. Non-finite values therefore
travel in binary mode with it, where they round-trip exactly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

kserve = pytest.importorskip("kserve")
from kserve import InferenceRESTClient, RESTConfig  # noqa: E402
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput  # noqa: E402

from tests.runtime.helpers import (  # noqa: E402
    RuntimeProcess,
    iris_rows,
    put_routes,
    routes,
    start_gateway,
    start_server,
)


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


def iris_request(binary: bool = False) -> InferRequest:
    tensor = InferInput("X", [4, 4], "FP32")
    tensor.set_data_from_numpy(iris_rows(4), binary_data=binary)
    return InferRequest(model_name="iris", infer_inputs=[tensor])


async def _infer(url: str, data, **options):
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
    try:
        return await client.infer(url, data, **options)
    finally:
        await client._client.aclose()


def infer(url: str, data, **options):
    # In a thread of its own: a browser journey earlier in the same run keeps Playwright's sync
    # event loop running on the main thread, where asyncio.run() refuses to start.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, _infer(url, data, **options)).result()


@pytest.mark.parametrize("name", ["1", "iris:2"])
def test_versioned_route_through_a_split_gateway(split, name):
    served = "iris:" + name.rpartition(":")[2]
    url = f"{split['gateway'].url}/v2/models/iris/versions/{name}/infer"
    for _ in range(10):
        answer = infer(url, iris_request(), is_graph_endpoint=True)
        assert answer["model_version"] == served
    # KServe's client names no version in its URL; a header pins one instead (its InferResponse
    # keeps no model_version, so the answer's header says who served it).
    for _ in range(10):
        headers: dict[str, str] = {}
        response = infer(
            split["gateway"].url,
            iris_request(),
            model_name="iris",
            headers={"X-Model-Version": name},
            response_headers=headers,
        )
        assert headers["x-model-version"] == served
        assert response.get_output_by_name("output_label").as_numpy().shape == (4,)


def test_unknown_version_is_404_listing_what_exists(split):
    import httpx

    url = f"{split['gateway'].url}/v2/models/iris/versions/9/infer"
    with pytest.raises(httpx.HTTPStatusError) as raised:
        infer(url, iris_request(), is_graph_endpoint=True)
    assert raised.value.response.status_code == 404
    assert "iris:1, iris:2" in raised.value.response.text


@pytest.mark.parametrize("through", ["v1", "gateway"])
def test_gzip_response_is_what_kserve_asks_for(split, through):
    headers: dict[str, str] = {}
    response = infer(
        split[through].url,
        iris_request(binary=True),
        model_name="iris",
        headers={"X-Model-Version": "1"},
        response_headers=headers,
    )
    # httpx asks for gzip by default and inflates the answer before KServe reads it
    assert headers["content-encoding"] == "gzip"
    labels = response.get_output_by_name("output_label").as_numpy()
    assert labels.shape == (4,)


@pytest.fixture(scope="module")
def float_server(tmp_path_factory) -> Iterator[RuntimeProcess]:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder = tmp_path_factory.mktemp("kserve-floats")
    onnx.save(model, folder / "model.onnx")
    server = start_server(folder, "floats", "floats:1", endpoint="floats")
    yield server
    server.stop()


def test_nan_and_infinity_round_trip_in_binary_mode(float_server):
    values = np.array([[np.nan, np.inf, -np.inf], [1.0, -0.0, 2.5]], dtype=np.float32)
    tensor = InferInput("x", [2, 3], "FP32")
    tensor.set_data_from_numpy(values, binary_data=True)
    request = InferRequest(
        model_name="floats",
        infer_inputs=[tensor],
        request_outputs=[RequestedOutput("y", parameters={"binary_data": True})],
    )
    response = infer(float_server.url, request, model_name="floats")
    answer = response.get_output_by_name("y").as_numpy()
    assert np.array_equal(answer, values, equal_nan=True)
    assert np.array_equal(np.signbit(answer), np.signbit(values))
