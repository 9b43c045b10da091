"""What an uploaded file is, decided by its bytes: an ONNX ModelProto, or a clear refusal.

This runs in the web process, so it never holds a big model in memory: a cheap header sniff
names the usual impostors (pickles, zip archives, HDF5 …), a walk over the protobuf wire format
checks the structure with bounded reads, and only files below a size limit are parsed whole with
`onnx.load`. The deep checks (checker, onnxruntime, smoke inference) run later in the sandboxed
validation child.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from common.errors import ApplicationError

# Known first bytes of files people upload by mistake, with a name a person recognises.
_MAGIC = [
    (b"PK\x03\x04", "a zip archive (a PyTorch .pt/.pth file, a Keras .keras file or similar)"),
    (b"PK\x05\x06", "an empty zip archive"),
    (b"\x1f\x8b", "gzip-compressed data"),
    (b"BZh", "bzip2-compressed data"),
    (b"\xfd7zXZ\x00", "xz-compressed data"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed data"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (a Keras .h5 model?)"),
    (b"\x93NUMPY", "a NumPy array file"),
    (b"ir_version:", "ONNX text format; upload the binary .onnx file"),
    (b"<", "an HTML or XML document"),
    (b"{", "a JSON document"),
]
_ONNX_HINT = (
    "Modeldeck accepts ONNX models only: export with skl2onnx, torch.onnx.export or tf2onnx."
)

# Protobuf wire types.
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5

# ModelProto fields and the wire type each must use (onnx/onnx.proto).
_MODEL_FIELDS = {
    1: _VARINT,  # ir_version
    2: _LENGTH,  # producer_name
    3: _LENGTH,  # producer_version
    4: _LENGTH,  # domain
    5: _VARINT,  # model_version
    6: _LENGTH,  # doc_string
    7: _LENGTH,  # graph
    8: _LENGTH,  # opset_import
    14: _LENGTH,  # metadata_props
    20: _LENGTH,  # training_info
    25: _LENGTH,  # functions
    26: _LENGTH,  # configuration
}
_GRAPH_FIELDS = {1, 2, 5, 10, 11, 12, 13, 14, 15, 16}
_TENSOR_FIELDS = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16}
# Small graph parts that the large-file path parses with protobuf itself, by field number.
_GRAPH_PARTS = {
    1: onnx.NodeProto,
    11: onnx.ValueInfoProto,
    12: onnx.ValueInfoProto,
    13: onnx.ValueInfoProto,
    14: onnx.TensorAnnotation,
    16: onnx.StringStringEntryProto,
}
_MAX_PART_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    """One graph input or output: name, ONNX element type (0 when not a tensor) and dims."""

    name: str
    elem_type: int
    dims: tuple[int | None, ...] | None


@dataclass(frozen=True)
class ModelSummary:
    """What the web process needs to know about a model before it is stored."""

    ir_version: int
    opsets: dict[str, int]
    producer: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]


def _refuse(message: str) -> ApplicationError:
    return ApplicationError(message, {"file": [message]})


def sniff_header(head: bytes, size: int) -> None:
    """Refuse empty files and well-known non-ONNX formats by their first bytes."""
    if size == 0 or not head:
        raise _refuse("The file is empty.")
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:
        raise _refuse(
            "This is a Python pickle, not an ONNX model. Pickles run code when loaded, so "
            f"Modeldeck never opens them. {_ONNX_HINT}"
        )
    for magic, description in _MAGIC:
        if head.startswith(magic):
            raise _refuse(f"This is {description}, not an ONNX model. {_ONNX_HINT}")


class _Truncated(Exception):
    pass


class _Malformed(Exception):
    pass


class _WireReader:
    """Bounded reads of protobuf wire data from a file, never more than one part at a time."""

    def __init__(self, stream: io.BufferedReader, end: int):
        self.stream = stream
        self.end = end

    @property
    def position(self) -> int:
        return self.stream.tell()

    def varint(self, limit: int) -> int:
        result = 0
        for shift in range(0, 70, 7):
            if self.position >= limit:
                raise _Truncated
            byte = self.stream.read(1)
            if not byte:
                raise _Truncated
            result |= (byte[0] & 0x7F) << shift
            if not byte[0] & 0x80:
                return result
        raise _Malformed("a number is longer than ten bytes")

    def tag(self, limit: int) -> tuple[int, int, int]:
        start = self.position
        key = self.varint(limit)
        field, wire_type = key >> 3, key & 7
        if field == 0:
            raise _Malformed(f"field number 0 at byte {start}")
        return start, field, wire_type

    def skip(self, wire_type: int, limit: int) -> tuple[int, int]:
        """Skip one value; returns (offset, length) of a length-delimited payload."""
        if wire_type == _VARINT:
            self.varint(limit)
            return self.position, 0
        widths = {_FIXED64: 8, _FIXED32: 4}
        if wire_type in widths:
            length = widths[wire_type]
        elif wire_type == _LENGTH:
            length = self.varint(limit)
        else:
            raise _Malformed(f"wire type {wire_type} (groups are not used by ONNX)")
        offset = self.position
        if offset + length > limit:
            raise _Truncated
        self.stream.seek(offset + length)
        return offset, length

    def read_at(self, offset: int, length: int) -> bytes:
        self.stream.seek(offset)
        data = self.stream.read(length)
        if len(data) != length:
            raise _Truncated
        return data


def _walk_model(reader: _WireReader) -> dict[int, list[tuple[int, int]]]:
    """Check the top level of a ModelProto; returns {field: [(offset, length)]} of its parts."""
    parts: dict[int, list[tuple[int, int]]] = {}
    while reader.position < reader.end:
        start, field, wire_type = reader.tag(reader.end)
        expected = _MODEL_FIELDS.get(field)
        if expected is None or expected != wire_type:
            raise _Malformed(
                f"byte {start} holds field {field} (wire type {wire_type}), "
                "which an ONNX model does not have"
            )
        if field == 1:
            parts.setdefault(1, []).append((reader.varint(reader.end), 0))
            continue
        parts.setdefault(field, []).append(reader.skip(wire_type, reader.end))
    return parts


def _walk_tensor(reader: _WireReader, offset: int, length: int) -> str:
    """Check an initializer's structure without reading its data; returns its name."""
    end = offset + length
    reader.stream.seek(offset)
    name = ""
    while reader.position < end:
        start, field, wire_type = reader.tag(end)
        if field not in _TENSOR_FIELDS:
            raise _Malformed(f"byte {start}: an initializer has unknown field {field}")
        value_offset, value_length = reader.skip(wire_type, end)
        if field == 8 and wire_type == _LENGTH:
            if value_length > 64 * 1024:
                raise _Malformed("an initializer name is longer than 64 KiB")
            position = reader.position
            name = reader.read_at(value_offset, value_length).decode("utf-8", "replace")
            reader.stream.seek(position)
    return name


def _tensor_info(value: onnx.ValueInfoProto) -> TensorInfo:
    if not value.type.HasField("tensor_type"):
        return TensorInfo(value.name, 0, None)
    tensor = value.type.tensor_type
    dims = None
    if tensor.HasField("shape"):
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
    return TensorInfo(value.name, tensor.elem_type, dims)


def _summary(
    *,
    ir_version: int,
    opsets: Iterable[onnx.OperatorSetIdProto],
    producer: str,
    inputs: Iterable[onnx.ValueInfoProto],
    outputs: Iterable[onnx.ValueInfoProto],
    initializer_names: set[str],
) -> ModelSummary:
    if ir_version < 1:
        raise _refuse(f"The file declares no ONNX IR version. {_ONNX_HINT}")
    graph_inputs = tuple(_tensor_info(v) for v in inputs if v.name not in initializer_names)
    graph_outputs = tuple(_tensor_info(v) for v in outputs)
    if not graph_outputs:
        raise _refuse("The ONNX graph has no outputs, so it cannot answer anything.")
    return ModelSummary(
        ir_version=ir_version,
        opsets={(o.domain or "ai.onnx"): o.version for o in opsets},
        producer=producer[:200],
        inputs=graph_inputs,
        outputs=graph_outputs,
    )


def _summary_from_proto(model: onnx.ModelProto) -> ModelSummary:
    graph = model.graph
    names = {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}
    return _summary(
        ir_version=model.ir_version,
        opsets=model.opset_import,
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        inputs=graph.input,
        outputs=graph.output,
        initializer_names=names,
    )


def _summary_by_walking(
    reader: _WireReader, parts: dict[int, list[tuple[int, int]]]
) -> ModelSummary:
    """The large-file path: parse every small part with protobuf, walk the initializers.

    A graph may come in several pieces (protobuf merges repeated occurrences of a message
    field), so every piece is walked.
    """
    values: dict[int, list] = {}
    initializer_names: set[str] = set()
    for graph_offset, graph_length in parts[7]:
        end = graph_offset + graph_length
        reader.stream.seek(graph_offset)
        while reader.position < end:
            start, field, wire_type = reader.tag(end)
            if field not in _GRAPH_FIELDS or (wire_type != _LENGTH):
                raise _Malformed(
                    f"byte {start}: the graph holds field {field} (wire type {wire_type}), "
                    "which an ONNX graph does not have"
                )
            offset, length = reader.skip(wire_type, end)
            position = reader.position
            if field in (5, 15):
                initializer_names.add(_walk_tensor(reader, offset, length))
            elif field in _GRAPH_PARTS:
                if length > _MAX_PART_BYTES:
                    raise _Malformed(f"byte {start}: one graph entry is larger than 64 MiB")
                message = _GRAPH_PARTS[field].FromString(reader.read_at(offset, length))
                values.setdefault(field, []).append(message)
            reader.stream.seek(position)
    if any(length > _MAX_PART_BYTES for _offset, length in parts.get(8, [])):
        raise _Malformed("an opset entry is larger than 64 MiB")
    opsets = [onnx.OperatorSetIdProto.FromString(reader.read_at(o, n)) for o, n in parts.get(8, [])]
    producer = " ".join(
        reader.read_at(o, min(n, 200)).decode("utf-8", "replace")
        for field in (2, 3)
        for o, n in parts.get(field, [])[-1:]
    )
    return _summary(
        ir_version=parts[1][-1][0],
        opsets=opsets,
        producer=producer.strip(),
        inputs=values.get(11, []),
        outputs=values.get(12, []),
        initializer_names=initializer_names,
    )


def inspect_model_file(path: Path, *, parse_limit: int) -> ModelSummary:
    """Decide from its content that `path` holds an ONNX model; refuse it readably otherwise.

    Files up to `parse_limit` bytes are parsed whole with `onnx.load`; larger ones are checked
    part by part so memory stays bounded whatever their size.
    """
    size = path.stat().st_size
    with open(path, "rb") as stream:
        sniff_header(stream.read(16), size)
        stream.seek(0)
        reader = _WireReader(stream, size)
        try:
            parts = _walk_model(reader)
            if 7 not in parts:
                raise _refuse(f"The file holds no ONNX graph. {_ONNX_HINT}")
            if 1 not in parts:
                raise _refuse(f"The file declares no ONNX IR version. {_ONNX_HINT}")
            if size > parse_limit:
                return _summary_by_walking(reader, parts)
        except _Truncated:
            raise _refuse(
                "The file is truncated: it ends in the middle of the model. Upload it again."
            ) from None
        except (_Malformed, DecodeError) as error:
            raise _refuse(f"This is not an ONNX model ({error}). {_ONNX_HINT}") from None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as error:
        raise _refuse(f"This is not a valid ONNX model ({error}). {_ONNX_HINT}") from None
    return _summary_from_proto(model)
