"""The inputs and outputs of an onnxruntime session, and checking requests against them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from modeldeck_runtime.codec import (
    DATATYPE_TO_NUMPY,
    InferRequest,
    RequestError,
    decode_tensor,
    decode_values,
    format_shape,
)
from modeldeck_runtime.protocol import ONNX_TYPE_TO_DATATYPE

DYNAMIC = -1


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output of the model: name, v2 datatype and shape (-1 for dynamic)."""

    name: str
    datatype: str
    shape: tuple[int, ...] | None
    onnx_type: str
    is_tensor: bool

    def metadata(self) -> dict[str, Any]:
        """The entry of this tensor in v2 model metadata."""
        shape = list(self.shape) if self.shape is not None else [DYNAMIC]
        return {"name": self.name, "datatype": self.datatype, "shape": shape}


@dataclass(frozen=True, slots=True)
class Signature:
    """The inputs and outputs of one model."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input_named(self, name: str) -> TensorSpec | None:
        """The input called name, if the model has one."""
        for spec in self.inputs:
            if spec.name == name:
                return spec
        return None

    def output_names(self) -> list[str]:
        """Every output name, in model order."""
        return [spec.name for spec in self.outputs]


def _shape(raw_shape: Any) -> tuple[int, ...] | None:
    if raw_shape is None:
        return None
    return tuple(
        dimension if isinstance(dimension, int) and dimension >= 0 else DYNAMIC
        for dimension in raw_shape
    )


def _spec(node: Any) -> TensorSpec:
    onnx_type = node.type
    datatype = ONNX_TYPE_TO_DATATYPE.get(onnx_type)
    is_tensor = onnx_type.startswith("tensor(")
    if datatype is None:
        # seq(map(...)) and other non-tensor values are answered as JSON strings
        datatype = "BYTES"
    return TensorSpec(
        name=node.name,
        datatype=datatype,
        shape=_shape(node.shape) if is_tensor else (DYNAMIC,),
        onnx_type=onnx_type,
        is_tensor=is_tensor,
    )


def read_signature(session: Any) -> Signature:
    """Read the signature of an onnxruntime InferenceSession."""
    inputs = tuple(_spec(node) for node in session.get_inputs())
    for spec in inputs:
        if not spec.is_tensor or spec.onnx_type not in ONNX_TYPE_TO_DATATYPE:
            raise ValueError(f"input '{spec.name}' has unsupported type {spec.onnx_type}")
    outputs = tuple(_spec(node) for node in session.get_outputs())
    return Signature(inputs=inputs, outputs=outputs)


def smoke_inputs(signature: Signature) -> dict[str, np.ndarray]:
    """One row of zeros (empty strings for BYTES) per input, for the readiness check."""
    feeds = {}
    for spec in signature.inputs:
        shape = tuple(1 if dimension == DYNAMIC else dimension for dimension in spec.shape or (1,))
        dtype = DATATYPE_TO_NUMPY[spec.datatype]
        if spec.datatype == "BYTES":
            feeds[spec.name] = np.full(shape, "", dtype=object)
        else:
            feeds[spec.name] = np.zeros(shape, dtype=dtype)
    return feeds


def check_shape(spec: TensorSpec, shape: tuple[int, ...] | list[int]) -> None:
    """Refuse a shape whose rank or fixed dimensions differ from the model's."""
    if spec.shape is None:
        return
    if len(shape) != len(spec.shape) or any(
        expected not in (DYNAMIC, actual)
        for expected, actual in zip(spec.shape, shape, strict=True)
    ):
        raise RequestError(
            f"input '{spec.name}' has shape {format_shape(list(shape))} "
            f"but the model expects {format_shape(spec.shape)}"
        )


def _rows(shape: tuple[int, ...] | list[int]) -> int:
    return shape[0] if shape else 1


def _check_rows(name: str, rows: int, max_rows: int) -> None:
    if rows > max_rows:
        raise RequestError(f"input '{name}' has {rows} rows, more than the limit of {max_rows}")


def _check_names(signature: Signature, names: list[str]) -> None:
    seen = set()
    for name in names:
        if signature.input_named(name) is None:
            known = ", ".join(spec.name for spec in signature.inputs)
            raise RequestError(f"unknown input '{name}'; the model's inputs are: {known}")
        if name in seen:
            raise RequestError(f"input '{name}' is given more than once")
        seen.add(name)
    for spec in signature.inputs:
        if spec.name not in seen:
            raise RequestError(f"missing input '{spec.name}'")


def bind_request(
    signature: Signature, request: InferRequest, max_rows: int
) -> tuple[dict[str, np.ndarray], int]:
    """Check a v2 request against the signature; return the feeds and the batch row count."""
    _check_names(signature, [raw.name for raw in request.inputs])
    feeds = {}
    rows = 0
    for raw in request.inputs:
        spec = signature.input_named(raw.name)
        assert spec is not None
        if raw.datatype != spec.datatype:
            raise RequestError(
                f"input '{raw.name}' has datatype {raw.datatype} "
                f"but the model expects {spec.datatype}"
            )
        check_shape(spec, raw.shape)
        _check_rows(raw.name, _rows(raw.shape), max_rows)
        rows = max(rows, _rows(raw.shape))
        feeds[raw.name] = decode_tensor(raw)
    if request.outputs is not None:
        known = signature.output_names()
        for name in request.outputs:
            if name not in known:
                raise RequestError(
                    f"unknown output '{name}'; the model's outputs are: {', '.join(known)}"
                )
    return feeds, rows


def bind_invocation(
    signature: Signature, document: Any, max_rows: int
) -> tuple[dict[str, np.ndarray], int]:
    """Check an /invocations body `{"inputs": {name: nested lists}}`; return feeds and rows."""
    if not isinstance(document, dict):
        raise RequestError("request body must be a JSON object")
    inputs = document.get("inputs")
    if not isinstance(inputs, dict) or not inputs:
        raise RequestError("request must have a non-empty 'inputs' object")
    _check_names(signature, list(inputs))
    feeds = {}
    rows = 0
    for name, data in inputs.items():
        spec = signature.input_named(name)
        assert spec is not None
        array = decode_values(name, spec.datatype, data)
        if spec.shape is not None and array.ndim == len(spec.shape) - 1:
            # a single row may be given without its batch dimension
            array = array.reshape((1, *array.shape))
        check_shape(spec, array.shape)
        _check_rows(name, _rows(array.shape), max_rows)
        rows = max(rows, _rows(array.shape))
        feeds[name] = array
    return feeds, rows
