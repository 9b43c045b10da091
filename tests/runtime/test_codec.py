"""Every v2 datatype travels through a real version server bit-exactly."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
from modeldeck_runtime.codec import (
    DATATYPE_TO_NUMPY,
    RequestError,
    decode_infer_response,
    decode_values,
    encode_infer_response,
    join_length_prefixed,
    parse_infer_request,
)

from tests.runtime.helpers import IDENTITY_TYPES, post_json, request

ROWS = 4


def sample(datatype: str, rows: int = ROWS) -> np.ndarray:
    """Values of one datatype including its extremes."""
    generator = np.random.default_rng(zlib.crc32(datatype.encode()))
    shape = (rows, 3)
    if datatype == "BOOL":
        return generator.integers(0, 2, shape).astype(bool)
    if datatype == "BYTES":
        words = ["", "plain", "ünïcödé", "emoji 🚀", 'quote " and \\ slash', "tab\tnewline\n"]
        return np.array([words[i % len(words)] for i in range(rows * 3)], dtype=object).reshape(
            shape
        )
    dtype = DATATYPE_TO_NUMPY[datatype]
    if dtype.kind in "iu":
        limits = np.iinfo(dtype)
        values = generator.integers(limits.min, limits.max, shape, dtype=dtype, endpoint=True)
        values.flat[0] = limits.min
        values.flat[1] = limits.max
        return values
    limits = np.finfo(dtype)
    values = (generator.standard_normal(shape) * 10.0 ** generator.integers(-4, 4, shape)).astype(
        dtype
    )
    values.flat[0] = limits.max
    values.flat[1] = limits.tiny
    values.flat[2] = -limits.max
    values.flat[3] = limits.smallest_subnormal
    values.flat[4] = -0.0
    return values


def bits(array: np.ndarray) -> np.ndarray:
    """A view that compares floats bit for bit."""
    if array.dtype.kind == "f":
        return array.view(f"u{array.dtype.itemsize}")
    return array


def as_json_data(array: np.ndarray) -> list:
    """Flat JSON data with exact float values."""
    return [value.item() if hasattr(value, "item") else value for value in array.ravel()]


@pytest.mark.parametrize("datatype", list(IDENTITY_TYPES))
def test_every_datatype_round_trips_bit_exactly_as_json(identity_server, datatype):
    values = sample(datatype)
    document = {
        "inputs": [
            {
                "name": f"in_{name}",
                "datatype": name,
                "shape": [ROWS, 3],
                "data": as_json_data(values if name == datatype else sample(name)),
            }
            for name in IDENTITY_TYPES
        ],
        "outputs": [{"name": f"out_{datatype}"}],
    }
    status, answer = post_json(identity_server.url + "/v2/models/identity/infer", document)
    assert status == 200, answer
    (output,) = answer["outputs"]
    assert output["name"] == f"out_{datatype}"
    assert output["datatype"] == datatype
    assert output["shape"] == [ROWS, 3]
    returned = np.array(output["data"], dtype=DATATYPE_TO_NUMPY[datatype]).reshape(ROWS, 3)
    np.testing.assert_array_equal(bits(returned), bits(values))


@pytest.mark.parametrize("datatype", list(IDENTITY_TYPES))
def test_every_datatype_round_trips_bit_exactly_as_binary(identity_server, datatype):
    chunks = []
    inputs = []
    for name in IDENTITY_TYPES:
        values = sample(name)
        raw = join_length_prefixed(values.ravel()) if name == "BYTES" else values.tobytes()
        chunks.append(raw)
        inputs.append(
            {
                "name": f"in_{name}",
                "datatype": name,
                "shape": [ROWS, 3],
                "parameters": {"binary_data_size": len(raw)},
            }
        )
    document = {
        "inputs": inputs,
        "outputs": [{"name": f"out_{datatype}", "parameters": {"binary_data": True}}],
    }
    header = json.dumps(document).encode()
    status, headers, payload = request(
        "POST",
        identity_server.url + "/v2/models/identity/infer",
        header + b"".join(chunks),
        {"Inference-Header-Content-Length": str(len(header))},
    )
    assert status == 200, payload
    outputs = decode_infer_response(payload, int(headers["inference-header-content-length"]))
    np.testing.assert_array_equal(bits(outputs[f"out_{datatype}"]), bits(sample(datatype)))


def test_nested_data_is_accepted_like_flat_data(identity_server):
    values = sample("INT32")
    document = {
        "inputs": [
            {
                "name": f"in_{name}",
                "datatype": name,
                "shape": [ROWS, 3],
                "data": sample(name).tolist(),
            }
            for name in IDENTITY_TYPES
        ],
        "outputs": [{"name": "out_INT32"}],
    }
    status, answer = post_json(identity_server.url + "/v2/models/identity/infer", document)
    assert status == 200, answer
    assert answer["outputs"][0]["data"] == values.ravel().tolist()


def test_unsigned_64_bit_values_above_the_signed_range_survive():
    values = decode_values("x", "UINT64", [2**64 - 1, 1, 2**63])
    assert values.dtype == np.uint64
    assert values.tolist() == [2**64 - 1, 1, 2**63]


@pytest.mark.parametrize(
    ("datatype", "data", "message"),
    [
        ("INT32", [1.5, 2], "input 'x' data must be integers for datatype INT32"),
        ("INT8", [300], "input 'x' has values outside the range of INT8"),
        ("FP32", ["1.0"], "input 'x' data must be numbers for datatype FP32"),
        ("BOOL", [1, 0], "input 'x' data must be true or false for datatype BOOL"),
        ("BYTES", [1, 2], "input 'x' data must be strings for datatype BYTES"),
        ("FP32", [[1, 2], [3]], "input 'x' data is ragged: nested lists must have equal lengths"),
    ],
)
def test_lossy_or_wrong_values_are_refused(datatype, data, message):
    with pytest.raises(RequestError) as caught:
        decode_values("x", datatype, data)
    assert caught.value.message == message


def test_response_encoding_round_trips_in_process():
    label = np.array([0, 2], dtype=np.int64)
    probabilities = [{0: 0.75, 1: 0.25}, {0: 0.125, 1: 0.875}]
    body, header_length = encode_infer_response(
        model_name="m",
        model_version="1",
        request_id="abc",
        outputs=[("label", label, True), ("probability", probabilities, False)],
    )
    assert header_length is not None
    document = json.loads(body[:header_length])
    assert document["id"] == "abc"
    assert document["outputs"][1] == {
        "name": "probability",
        "datatype": "BYTES",
        "shape": [2],
        "parameters": {"content_type": "json"},
        "data": ['{"0":0.75,"1":0.25}', '{"0":0.125,"1":0.875}'],
    }
    decoded = decode_infer_response(body, header_length)
    np.testing.assert_array_equal(decoded["label"], label)


def test_binary_request_parses_inputs_in_order():
    first = np.arange(6, dtype=np.float32)
    second = np.array(["a", "bc"], dtype=object)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "a",
                    "datatype": "FP32",
                    "shape": [2, 3],
                    "parameters": {"binary_data_size": 24},
                },
                {
                    "name": "b",
                    "datatype": "BYTES",
                    "shape": [2],
                    "parameters": {"binary_data_size": 11},
                },
            ]
        }
    ).encode()
    body = header + first.tobytes() + join_length_prefixed(second)
    parsed = parse_infer_request(body, len(header))
    assert [raw.name for raw in parsed.inputs] == ["a", "b"]
    assert parsed.inputs[0].binary == first.tobytes()


def test_flat_float_lists_convert_exactly_and_refuse_what_they_did_before():
    from modeldeck_runtime.codec import RequestError, decode_values

    values = [0.1, -2.5, 3, 1e-40, 3.4028235e38, float("nan")]
    for datatype, dtype in (("FP32", np.float32), ("FP64", np.float64), ("FP16", np.float16)):
        with np.errstate(over="ignore"):  # 3.4e38 is inf in FP16, on both paths
            decoded = decode_values("x", datatype, values)
            expected = np.asarray(values).astype(dtype)
        assert decoded.dtype == dtype
        assert np.array_equal(decoded, expected, equal_nan=True)
    for refused in ([True, False], ["1.5"], [1.0, "a"], [1.0, None], [10**400]):
        with pytest.raises(RequestError):
            decode_values("x", "FP32", refused)


# --- large JSON requests: simdjson's path answers exactly as the general one ---------------


def _parsed(body: bytes, monkeypatch, *, general: bool):
    """(id, outputs, binary flags, parameters, [(name, datatype, shape, array bits)]) or the
    RequestError message, read by the general path or by the large-request path."""
    import modeldeck_runtime.codec as codec

    monkeypatch.setattr(codec, "LARGE_JSON_BYTES", 1 << 62 if general else 0)
    try:
        request = codec.parse_infer_request(body, None)
        tensors = []
        for raw in request.inputs:
            array = codec.decode_tensor(raw)
            tensors.append((raw.name, raw.datatype, raw.shape, array.dtype, bits(array).tolist()))
    except RequestError as error:
        return ("refused", str(error))
    return (request.id, request.outputs, request.binary_outputs, request.parameters, tensors)


def _request(data, datatype="FP32", shape=None, **extra) -> bytes:
    entry = {"name": "x", "datatype": datatype, "data": data}
    entry["shape"] = shape if shape is not None else [len(data)]
    return json.dumps({"id": "r1", "inputs": [entry], **extra}).encode()


LARGE_FLOATS = [float(v) for v in sample("FP64", rows=1200).ravel()]


@pytest.mark.parametrize(
    "body",
    [
        _request(LARGE_FLOATS),
        _request(LARGE_FLOATS, "FP64"),
        _request(LARGE_FLOATS, "FP16"),
        _request([1, 2.5, -3, 0, 2**53 + 1, 2**63 + 5] * 600),
        _request([LARGE_FLOATS[i : i + 3] for i in range(0, 3600, 3)], shape=[1200, 3]),
        _request([LARGE_FLOATS[i : i + 3] for i in range(0, 3600, 3)] + [[1.0]], shape=[3601]),
        _request(list(range(-3000, 3000)), "INT32"),
        _request([f"word {i}" for i in range(3000)], "BYTES"),
        _request([*LARGE_FLOATS[:3599], "1.5"]),
        _request([*LARGE_FLOATS[:3599], True]),
        _request([*LARGE_FLOATS[:3599], None]),
        _request([*LARGE_FLOATS[:3599], [1.0]]),
        _request(LARGE_FLOATS, shape=[7]),
        _request(LARGE_FLOATS, outputs=[{"name": "y", "parameters": {"binary_data": True}}]),
        _request(LARGE_FLOATS, parameters={"binary_data_output": True, "note": [1, {"a": 2}]}),
        json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [3],
                                "data": [float("nan"), float("inf"), -1.0]}],
                    "pad": "p" * 20000}).encode(),
        _request(LARGE_FLOATS)[:-1] + b', "id": "second"}',  # repeated key: the last one wins
        _request(LARGE_FLOATS).replace(b'"data": [', b'"data": [9.5], "data": [', 1),
        json.dumps({"inputs": {"x": LARGE_FLOATS}}).encode(),
        json.dumps({"inputs": [LARGE_FLOATS]}).encode(),
        json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [900]}],
                    "pad": "p" * 20000}).encode(),
        json.dumps([{"inputs": []}] * 3000).encode(),
        _request(LARGE_FLOATS).replace(b"]", b"] ", 1).replace(b"[", b"[\n ", 1),
        _request(LARGE_FLOATS)[:-2],  # truncated
        _request(LARGE_FLOATS).replace(b"0.", b"1e400, 0.", 1),
    ],
)  # fmt: skip
def test_large_requests_are_read_exactly_as_the_general_path_reads_them(body, monkeypatch):
    from modeldeck_runtime.codec import LARGE_JSON_BYTES

    assert len(body) >= LARGE_JSON_BYTES
    assert _parsed(body, monkeypatch, general=False) == _parsed(body, monkeypatch, general=True)


def test_a_large_float_request_skips_python_floats():
    """The point of the large-request path: flat float data arrives as an array, not a list."""
    request = parse_infer_request(_request(LARGE_FLOATS), None)
    assert isinstance(request.inputs[0].data, np.ndarray)
    small = parse_infer_request(_request(LARGE_FLOATS[:8]), None)
    assert isinstance(small.inputs[0].data, list)
