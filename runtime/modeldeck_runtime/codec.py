"""Open Inference Protocol v2 over HTTP (JSON and the binary tensor extension) <-> numpy."""

from __future__ import annotations

import array
import json
import math
import secrets
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import simdjson

from modeldeck_runtime.protocol import DATATYPE_TO_NUMPY_NAME, FLOAT_DATATYPES

DATATYPE_TO_NUMPY: dict[str, np.dtype] = {
    datatype: np.dtype(name) for datatype, name in DATATYPE_TO_NUMPY_NAME.items()
}

NUMPY_TO_DATATYPE: dict[np.dtype, str] = {
    dtype: datatype for datatype, dtype in DATATYPE_TO_NUMPY.items() if datatype != "BYTES"
}

# From this size on (measured break-even: ~8-10 KiB), a JSON request is read by simdjson, whose
# float inputs become arrays without a Python float per value; below it orjson is cheaper.
LARGE_JSON_BYTES = 16384

# Non-tensor outputs (sklearn's ZipMap probabilities) travel as BYTES, one JSON object per row.
JSON_CONTENT_TYPE = "json"

JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
_LENGTH_PREFIX = struct.Struct("<I")
# A per-process random mark, so no caller's string output can forge a placeholder.
_NONFINITE_MARK = f"modeldeck:nonfinite:{secrets.token_hex(16)}:"


class RequestError(Exception):
    """A request the server refuses; the message is shown to the client as it is."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(slots=True)
class RawTensor:
    """One input tensor as the client sent it, not yet checked against the model."""

    name: str
    datatype: str
    shape: list[int]
    data: Any
    binary: bytes | None


@dataclass(slots=True)
class InferRequest:
    """A parsed v2 inference request."""

    id: str | None
    inputs: list[RawTensor]
    outputs: list[str] | None
    binary_outputs: dict[str, bool]
    binary_default: bool
    parameters: dict[str, Any]

    def wants_binary(self, name: str) -> bool:
        """Whether the client asked for this output in the binary tensor extension."""
        return self.binary_outputs.get(name, self.binary_default)


def format_shape(shape: list[int] | tuple[int, ...] | None) -> str:
    """Render a shape the way it appears in error messages."""
    if shape is None:
        return "any shape"
    return "[" + ", ".join(str(dimension) for dimension in shape) + "]"


def parse_json(body: bytes | memoryview) -> Any:
    """Parse JSON that may carry NaN, Infinity and -Infinity, as Triton and Python's json write.

    orjson reads standard JSON fast; only a body it refuses that has one of those tokens is read
    again by the standard library's parser, which accepts them. Raises ValueError.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        text = bytes(body)
        if b"NaN" not in text and b"Infinity" not in text:
            raise
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def load_json(body: bytes | memoryview) -> Any:
    """Parse a JSON body or raise the client error for malformed JSON."""
    try:
        return parse_json(body)
    except ValueError:
        raise RequestError("request body is not valid JSON") from None


class NonFinite:
    """Writes float tensors holding NaN or ±Inf as NaN, Infinity and -Infinity.

    orjson (like strict JSON) writes them as null, which readers turn into NaN: a silent data
    change. Triton writes the tokens (rapidjson's kWriteNanAndInfFlag) and tritonclient and
    Python's json read them back, so values round-trip in JSON mode as in binary mode. Such an
    array is held back as a placeholder string while the document is encoded, then written in
    place of the placeholder.
    """

    def __init__(self) -> None:
        self.held: list[np.ndarray] = []

    def hold(self, value: Any) -> Any:
        """The value itself unless it is a float array with non-finite values: a placeholder."""
        if (
            not isinstance(value, np.ndarray)
            or value.dtype.kind != "f"
            or bool(np.isfinite(value).all())
        ):
            return value
        self.held.append(value)
        return f"{_NONFINITE_MARK}{len(self.held) - 1}"

    def dumps(self, document: Any) -> bytes:
        """Encode document, writing held arrays with their non-finite tokens."""
        encoded = orjson.dumps(document, option=JSON_OPTIONS)
        for index, held in enumerate(self.held):
            placeholder = b'"%s%d"' % (_NONFINITE_MARK.encode(), index)
            encoded = encoded.replace(placeholder, _render_nonfinite(held), 1)
        return encoded


def _render_nonfinite(array: np.ndarray) -> bytes:
    values = array.astype(np.float32) if array.dtype == np.float16 else array
    # orjson writes each non-finite element as null; nothing else in a float array is null.
    pieces = orjson.dumps(values, option=JSON_OPTIONS).split(b"null")
    tokens = [
        b"NaN" if np.isnan(value) else b"Infinity" if value > 0 else b"-Infinity"
        for value in values.flat
        if not np.isfinite(value)
    ]
    out = [pieces[0]]
    for token, piece in zip(tokens, pieces[1:], strict=True):
        out += (token, piece)
    return b"".join(out)


def parse_infer_request(body: bytes, header_length: int | None) -> InferRequest:
    """Parse a v2 inference request body, with or without appended binary tensors."""
    if header_length is not None:
        if header_length < 0 or header_length > len(body):
            raise RequestError("Inference-Header-Content-Length is larger than the request body")
        document = load_json(body[:header_length])
        buffer = memoryview(body)[header_length:]
    else:
        document = _large_json_request(body) if len(body) >= LARGE_JSON_BYTES else None
        if document is None:
            document = load_json(body)
        buffer = memoryview(b"")
    if not isinstance(document, dict):
        raise RequestError("request body must be a JSON object")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError("'id' must be a string")
    parameters = _parameters(document, "request")
    raw_inputs = document.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise RequestError("request must have a non-empty 'inputs' list")
    inputs = []
    offset = 0
    for entry in raw_inputs:
        tensor, size = _parse_input(entry, buffer, offset)
        offset += size
        inputs.append(tensor)
    if offset != len(buffer):
        raise RequestError(
            f"request carries {len(buffer) - offset} bytes of binary data that no input claims"
        )
    outputs, binary_outputs = _parse_requested_outputs(document.get("outputs"))
    return InferRequest(
        id=request_id,
        inputs=inputs,
        outputs=outputs,
        binary_outputs=binary_outputs,
        binary_default=parameters.get("binary_data_output") is True,
        parameters=parameters,
    )


def _large_json_request(body: bytes) -> dict[str, Any] | None:
    """A large JSON request whose inputs are all flat lists of floats, read by simdjson: the
    document as plain Python values, except that each input's `data` is already a float64 array.

    With many rows, making a Python float per value and converting the list (orjson, then the
    array module) is most of a request's cost; simdjson reads the numbers straight into a
    buffer. None whenever the general path must decide, which then reads or refuses the body
    exactly as it would have: simdjson does not read it (NaN or Infinity tokens, invalid JSON),
    it is not an object, an object repeats a key (orjson keeps the last value, simdjson the
    first), an input is not a float tensor given as a list of numbers, a list is nested (its
    values flattened would hide a ragged shape), or a string escape could hide a bracket.
    """
    if body.find(b"\\") != -1:
        return None
    try:
        document = simdjson.Parser().parse(body)
    except ValueError:
        return None
    if not isinstance(document, simdjson.Object):
        return None
    inputs = document.get("inputs")
    if not isinstance(inputs, simdjson.Array) or not len(inputs):
        return None
    plain = _plain_object(document, leave_out="inputs")
    if plain is None:
        return None
    entries = []
    for entry in inputs:
        if not isinstance(entry, simdjson.Object):
            return None
        values = _plain_object(entry, leave_out="data")
        if values is None or values.get("datatype") not in FLOAT_DATATYPES:
            return None
        data = entry.get("data")
        if not isinstance(data, simdjson.Array) or not len(data):
            return None
        try:
            numbers = np.frombuffer(data.as_buffer(of_type="d"), dtype=np.float64)
        except (TypeError, ValueError):
            return None  # strings, booleans, null: decode_values refuses them with its message
        values["data"] = numbers
        entries.append(values)
    plain["inputs"] = entries
    # as_buffer flattens nested lists. A flat document has exactly one "[" per list, data lists
    # included, plus those inside strings (no escapes, checked above): one more means nesting.
    expected = _brackets(plain)
    if _count_brackets(body, expected) != expected:
        return None
    return plain


def _plain_object(value: Any, leave_out: str) -> dict[str, Any] | None:
    """A simdjson object as a dict without the key `leave_out`; None when a key repeats."""
    keys = list(value.keys())
    if len(set(keys)) != len(keys):
        return None
    return {key: _plain(value[key]) for key in keys if key != leave_out}


def _plain(value: Any) -> Any:
    if isinstance(value, simdjson.Object):
        return value.as_dict()
    if isinstance(value, simdjson.Array):
        return value.as_list()
    return value


def _brackets(value: Any) -> int:
    """How many "[" the JSON text of a plain value holds (lists and unescaped strings)."""
    if isinstance(value, str):
        return value.count("[")
    if isinstance(value, np.ndarray):
        return 1
    if isinstance(value, list):
        return 1 + sum(_brackets(item) for item in value)
    if isinstance(value, dict):
        return sum(key.count("[") + _brackets(item) for key, item in value.items())
    return 0


def _count_brackets(body: bytes, limit: int) -> int:
    """The number of "[" in the body, counting no further than one past `limit`."""
    count, position = 0, body.find(b"[")
    while position != -1 and count <= limit:
        count += 1
        position = body.find(b"[", position + 1)
    return count


def _parameters(entry: dict[str, Any], where: str) -> dict[str, Any]:
    parameters = entry.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise RequestError(f"'parameters' of {where} must be a JSON object")
    return parameters


def _parse_input(entry: Any, buffer: memoryview, offset: int) -> tuple[RawTensor, int]:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise RequestError("each input must be an object with a 'name'")
    name = entry["name"]
    datatype = entry.get("datatype")
    if not isinstance(datatype, str):
        raise RequestError(f"input '{name}' must have a 'datatype'")
    if datatype not in DATATYPE_TO_NUMPY:
        raise RequestError(f"input '{name}' has unsupported datatype '{datatype}'")
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(
        type(dimension) is int and dimension >= 0 for dimension in shape
    ):
        raise RequestError(f"input '{name}' must have a 'shape' list of non-negative integers")
    parameters = _parameters(entry, f"input '{name}'")
    binary_size = parameters.get("binary_data_size")
    if binary_size is not None:
        if type(binary_size) is not int or binary_size < 0:
            raise RequestError(f"input '{name}' has an invalid binary_data_size")
        if offset + binary_size > len(buffer):
            raise RequestError(f"input '{name}' claims more binary data than the request carries")
        binary = bytes(buffer[offset : offset + binary_size])
        return RawTensor(name, datatype, shape, None, binary), binary_size
    if "data" not in entry:
        raise RequestError(f"input '{name}' must have 'data'")
    return RawTensor(name, datatype, shape, entry["data"], None), 0


def _parse_requested_outputs(raw_outputs: Any) -> tuple[list[str] | None, dict[str, bool]]:
    if raw_outputs is None:
        return None, {}
    if not isinstance(raw_outputs, list):
        raise RequestError("'outputs' must be a list")
    names = []
    binary_outputs = {}
    for entry in raw_outputs:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise RequestError("each requested output must be an object with a 'name'")
        name = entry["name"]
        names.append(name)
        binary = _parameters(entry, f"output '{name}'").get("binary_data")
        if isinstance(binary, bool):
            binary_outputs[name] = binary
    return names, binary_outputs


def decode_tensor(raw: RawTensor) -> np.ndarray:
    """Turn one raw input into a numpy array of its declared datatype and shape."""
    count = math.prod(raw.shape)
    if raw.binary is not None:
        array = _decode_binary(raw.name, raw.datatype, raw.binary)
    else:
        array = decode_values(raw.name, raw.datatype, raw.data)
    if array.size != count:
        raise RequestError(
            f"input '{raw.name}' has {array.size} values but shape "
            f"{format_shape(raw.shape)} needs {count}"
        )
    return array.reshape(raw.shape)


def decode_values(name: str, datatype: str, data: Any) -> np.ndarray:
    """Convert JSON data (flat or nested lists) to an array of datatype, refusing lossy casts."""
    if datatype == "BYTES":
        return _decode_strings(name, data)
    target = DATATYPE_TO_NUMPY[datatype]
    if type(data) is np.ndarray and data.dtype == np.float64 and target.kind == "f":
        return data.astype(target)  # a large request's flat numbers, read by simdjson
    if target.kind == "f" and type(data) is list and data and type(data[0]) in (float, int):
        # A flat list of numbers (what tritonclient sends): the array module converts it about
        # a third faster than numpy's type discovery; anything else it refuses (nested lists,
        # strings, null) takes the general path below.
        try:
            values = array.array("d", data)
        except (TypeError, OverflowError):
            pass
        else:
            return np.frombuffer(values, dtype=np.float64).astype(target)
    try:
        probe = np.asarray(data)
    except ValueError:
        raise RequestError(
            f"input '{name}' data is ragged: nested lists must have equal lengths"
        ) from None
    kind = probe.dtype.kind
    if probe.size == 0:
        return probe.astype(target)
    if datatype == "BOOL":
        if kind != "b":
            raise RequestError(f"input '{name}' data must be true or false for datatype BOOL")
        return probe
    if target.kind == "f":
        if kind not in "iuf":
            raise RequestError(f"input '{name}' data must be numbers for datatype {datatype}")
        return probe.astype(target, copy=False)
    if kind in "iu":
        limits = np.iinfo(target)
        if int(probe.min()) < limits.min or int(probe.max()) > limits.max:
            raise RequestError(f"input '{name}' has values outside the range of {datatype}")
        return probe.astype(target, copy=False)
    if kind == "f" and datatype == "UINT64":
        # numpy reads integers above 2**63 mixed with smaller ones as floats; re-read them exactly
        return _exact_unsigned(name, data).reshape(probe.shape)
    raise RequestError(f"input '{name}' data must be integers for datatype {datatype}")


def _exact_unsigned(name: str, data: Any) -> np.ndarray:
    values: list[Any] = []
    pending = [data]
    while pending:
        item = pending.pop()
        if isinstance(item, list):
            pending.extend(reversed(item))
        else:
            values.append(item)
    if not all(type(value) is int and 0 <= value < 2**64 for value in values):
        raise RequestError(f"input '{name}' data must be integers for datatype UINT64")
    return np.array(values, dtype=np.uint64)


def _decode_strings(name: str, data: Any) -> np.ndarray:
    array = np.array(data, dtype=object)
    for value in array.flat:
        if type(value) is not str:
            raise RequestError(f"input '{name}' data must be strings for datatype BYTES")
    return array


def _decode_binary(name: str, datatype: str, binary: bytes) -> np.ndarray:
    if datatype == "BYTES":
        try:
            return np.array(
                [value.decode() for value in split_length_prefixed(binary)], dtype=object
            )
        except (ValueError, struct.error):
            raise RequestError(
                f"input '{name}' binary data is not a sequence of length-prefixed UTF-8 strings"
            ) from None
    dtype = DATATYPE_TO_NUMPY[datatype]
    if len(binary) % dtype.itemsize:
        raise RequestError(
            f"input '{name}' binary data of {len(binary)} bytes is not a whole number "
            f"of {datatype} values"
        )
    return np.frombuffer(binary, dtype=dtype)


def split_length_prefixed(binary: bytes) -> list[bytes]:
    """Split the binary form of a BYTES tensor: each element is a 4-byte little-endian length."""
    values = []
    offset = 0
    while offset < len(binary):
        (length,) = _LENGTH_PREFIX.unpack_from(binary, offset)
        offset += 4
        if offset + length > len(binary):
            raise ValueError("truncated string element")
        values.append(binary[offset : offset + length])
        offset += length
    return values


def join_length_prefixed(values: list[str] | np.ndarray) -> bytes:
    """Build the binary form of a BYTES tensor."""
    parts = []
    for value in values:
        encoded = value if isinstance(value, bytes) else str(value).encode()
        parts.append(_LENGTH_PREFIX.pack(len(encoded)))
        parts.append(encoded)
    return b"".join(parts)


def datatype_of(array: np.ndarray) -> str:
    """The v2 datatype of an output array."""
    datatype = NUMPY_TO_DATATYPE.get(array.dtype)
    if datatype is not None:
        return datatype
    if array.dtype.kind in "OUS":
        return "BYTES"
    raise ValueError(f"no v2 datatype for numpy dtype {array.dtype}")


def rows_as_json(value: Any) -> list[str]:
    """Render a non-tensor output (a sequence of maps) as one JSON object string per row."""
    rows = value if isinstance(value, list) else [value]
    return [orjson.dumps(row, option=JSON_OPTIONS).decode() for row in rows]


def encode_output(
    name: str, value: Any, binary: bool, chunks: list[bytes], nonfinite: NonFinite | None = None
) -> dict[str, Any]:
    """Describe one output for a v2 response; binary data is appended to chunks."""
    if isinstance(value, np.ndarray):
        datatype = datatype_of(value)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(value.shape)}
        if datatype == "BYTES":
            flat: Any = value.ravel().tolist()
        else:
            flat = np.ascontiguousarray(value).ravel()
    else:
        flat = rows_as_json(value)
        datatype = "BYTES"
        entry = {
            "name": name,
            "datatype": datatype,
            "shape": [len(flat)],
            "parameters": {"content_type": JSON_CONTENT_TYPE},
        }
    if binary:
        raw = join_length_prefixed(flat) if datatype == "BYTES" else flat.tobytes()
        entry.setdefault("parameters", {})["binary_data_size"] = len(raw)
        chunks.append(raw)
    else:
        entry["data"] = (
            nonfinite.hold(flat) if nonfinite is not None and datatype != "BYTES" else flat
        )
    return entry


def encode_infer_response(
    *,
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: list[tuple[str, Any, bool]],
) -> tuple[bytes, int | None]:
    """Build a v2 response body; the header length is set when binary tensors follow the JSON."""
    chunks: list[bytes] = []
    document: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        document["id"] = request_id
    nonfinite = NonFinite()
    document["outputs"] = [
        encode_output(name, value, binary, chunks, nonfinite) for name, value, binary in outputs
    ]
    header = nonfinite.dumps(document)
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)


def invocation_value(value: Any) -> Any:
    """The JSON-friendly form of one output for /invocations answers."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OUS":
            return value.tolist()
        return np.ascontiguousarray(value)
    return value


def decode_infer_response(body: bytes, header_length: int | None) -> dict[str, np.ndarray]:
    """Read the outputs of a v2 response (JSON or binary) back into arrays."""
    document = parse_json(body[:header_length] if header_length is not None else body)
    buffer = body[header_length:] if header_length is not None else b""
    offset = 0
    outputs = {}
    for entry in document.get("outputs", []):
        datatype = entry["datatype"]
        size = entry.get("parameters", {}).get("binary_data_size")
        if size is not None:
            chunk = buffer[offset : offset + size]
            offset += size
            if datatype == "BYTES":
                array = np.array(
                    [value.decode() for value in split_length_prefixed(chunk)], dtype=object
                )
            else:
                array = np.frombuffer(chunk, dtype=DATATYPE_TO_NUMPY[datatype])
        else:
            array = np.array(entry["data"], dtype=DATATYPE_TO_NUMPY[datatype])
        outputs[entry["name"]] = array.reshape(entry["shape"])
    return outputs


def decode_invocation_response(body: bytes) -> dict[str, np.ndarray]:
    """Read the outputs of an /invocations answer back into arrays."""
    document = parse_json(body)
    outputs = {}
    for name, value in document.get("outputs", {}).items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            outputs[name] = np.array(rows_as_json(value), dtype=object)
        else:
            outputs[name] = np.asarray(value)
    return outputs
