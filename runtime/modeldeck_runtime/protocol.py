"""The wire protocol the runtime and the dashboard share, written once: the Open Inference
Protocol v2 datatypes, the route table document a gateway accepts on `PUT /-/routes`, and the
canonical bytes an edge manifest's signature covers.

Plain Python only (no numpy, no Django), so the dashboard, the version server, the gateway and
the edge agent all import it. The gateway's validating reader of the route table is
`modeldeck_runtime.routing.parse_table`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

# --- datatypes ---------------------------------------------------------------------------------

# ONNX type names → Open Inference Protocol datatypes (what the runtime can decode).
ONNX_TYPE_TO_DATATYPE: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

# Open Inference Protocol datatypes → numpy dtype names; BYTES tensors hold Python objects.
DATATYPE_TO_NUMPY_NAME: dict[str, str] = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BYTES": "object",
}

# --- the route table (PUT /-/routes) -----------------------------------------------------------

# The v2 datatypes of floating-point tensors.
FLOAT_DATATYPES = frozenset({"FP16", "FP32", "FP64"})

ROLES = ("primary", "candidate", "shadow")
# Replicas one route may balance across.
MAX_UPSTREAMS = 20


def route_document(
    *,
    version: str,
    upstreams: Sequence[str],
    weight: float,
    role: str,
    mirror_percent: float,
) -> dict[str, Any]:
    """The JSON form of one route: one replica as "upstream" (which gateways of any runtime
    version read), several as "upstreams"; only a shadow route carries its mirror_percent."""
    entry: dict[str, Any] = {"version": version}
    if len(upstreams) > 1:
        entry["upstreams"] = list(upstreams)
    else:
        entry["upstream"] = upstreams[0]
    entry.update(weight=weight, role=role)
    if role == "shadow":
        entry["mirror_percent"] = mirror_percent
    return entry


def route_table_document(
    *,
    generation: int,
    sticky: dict[str, str] | None,
    routes: list[dict[str, Any]],
    access: dict | None = None,
) -> dict[str, Any]:
    """The body of `PUT /-/routes`: the generation (the fence against stale writers), the sticky
    key (`{"header": NAME}`, `{"cookie": NAME}` or null), the routes of `route_document`, and
    the endpoint's `access` part when given (see modeldeck_runtime.keys.parse_access)."""
    document: dict[str, Any] = {
        "generation": generation,
        "sticky": sticky or None,
        "routes": routes,
    }
    if access is not None:
        document["access"] = access
    return document


# --- edge manifests ----------------------------------------------------------------------------


def canonical(manifest: dict[str, Any]) -> bytes:
    """The bytes a manifest signature covers (edge.signing signs them, the agent checks them):
    sorted keys, no spaces, UTF-8."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
