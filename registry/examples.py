"""A runnable Open Inference Protocol v2 request for a version: the first good row of its
reference CSV when it has one, else zeros in the shape of its signature. The endpoint page
builds its curl and tritonclient examples from it."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

from modeldeck_runtime.protocol import DATATYPE_TO_NUMPY_NAME

from registry import batch
from registry.models import ArtifactKind, ModelVersion
from registry.storage import artifact_storage

# The page reads only the start of the reference file, whatever its size.
REFERENCE_HEAD_BYTES = 64 * 1024
# Inputs larger than this many values are not shown inline (the example would not fit a page).
MAX_EXAMPLE_VALUES = 256
ZERO = {"BOOL": False, "BYTES": ""}


def _rows_of(shape: list) -> list[int]:
    """The signature's shape with every dynamic axis (None, -1) as 1."""
    return [dimension if isinstance(dimension, int) and dimension > 0 else 1 for dimension in shape]


def _from_signature(signature: dict) -> list[dict[str, Any]] | None:
    inputs = []
    for spec in signature.get("inputs") or []:
        shape = _rows_of(list(spec.get("shape") or [1]))
        count = math.prod(shape)
        if count > MAX_EXAMPLE_VALUES:
            return None
        datatype = spec.get("datatype", "FP32")
        value = ZERO.get(datatype, 0.0 if datatype.startswith("FP") else 0)
        inputs.append(
            {"name": spec["name"], "datatype": datatype, "shape": shape, "data": [value] * count}
        )
    return inputs or None


def _reference_head(version: ModelVersion) -> tuple[list[str], list[str]] | None:
    """The header and first data row of the version's reference CSV, read from its start."""
    artifact = version.artifacts.filter(kind=ArtifactKind.REFERENCE).first()
    if artifact is None:
        return None
    try:
        with artifact_storage().open(artifact.storage_key, "rb") as handle:
            head = handle.read(REFERENCE_HEAD_BYTES)
    except OSError:
        return None
    lines = head.decode("utf-8", errors="replace").splitlines()[:50]
    rows = [row for row in csv.reader(io.StringIO("\n".join(lines[:-1] or lines))) if row]
    return (rows[0], rows[1]) if len(rows) >= 2 else None


def _from_reference(version: ModelVersion, signature: dict) -> list[dict[str, Any]] | None:
    found = _reference_head(version)
    if found is None:
        return None
    header, row = found
    try:
        plan = batch.plan_columns(header, signature)
        feeds = batch.tensors_for(plan, [row])
    except (batch.Refusal, ValueError, IndexError):
        return None
    datatypes = {spec["name"]: spec["datatype"] for spec in signature.get("inputs") or []}
    inputs = []
    for name, array in feeds.items():
        values = array.reshape(-1).tolist()
        if len(values) > MAX_EXAMPLE_VALUES:
            return None
        inputs.append(
            {
                "name": name,
                "datatype": datatypes[name],
                "shape": list(array.shape),
                "data": [round(v, 6) if isinstance(v, float) else v for v in values],
            }
        )
    return inputs


def inference_example(version: ModelVersion | None) -> dict[str, Any] | None:
    """`{"body": {...}, "source": "reference" | "signature"}`, or None when the version has
    no usable signature (not validated yet, or inputs too large to show)."""
    if version is None or not (version.signature or {}).get("inputs"):
        return None
    signature = version.signature
    inputs = _from_reference(version, signature)
    source = "reference"
    if inputs is None:
        inputs, source = _from_signature(signature), "signature"
    if inputs is None:
        return None
    return {"body": {"inputs": inputs}, "source": source}


def curl_command(url: str, model_name: str, body: dict) -> str:
    """A curl line that runs as shown in a POSIX shell (the body has no single quotes)."""
    text = json.dumps(body, separators=(", ", ": "))
    if "'" in text:  # BYTES values from a reference row may hold one
        text = text.replace("'", "'\\''")
    return (
        f"curl -s {url}/v2/models/{model_name}/infer \\\n"
        f"  -H 'Content-Type: application/json' \\\n"
        f"  -d '{text}'"
    )


def tritonclient_snippet(url: str, model_name: str, body: dict) -> str:
    """Python with tritonclient's HTTP client sending the same request."""
    host = url.split("://", 1)[-1].rstrip("/")
    lines = [
        "import numpy as np",
        "import tritonclient.http as httpclient",
        "",
        f'client = httpclient.InferenceServerClient("{host}")',
        "inputs = []",
    ]
    for spec in body["inputs"]:
        dtype = DATATYPE_TO_NUMPY_NAME.get(spec["datatype"], "float32")
        lines += [
            f'tensor = httpclient.InferInput("{spec["name"]}", {spec["shape"]}, '
            f'"{spec["datatype"]}")',
            f"tensor.set_data_from_numpy(np.array({spec['data']!r}, "
            f'dtype="{dtype}").reshape({spec["shape"]}))',
            "inputs.append(tensor)",
        ]
    lines += [
        f'result = client.infer("{model_name}", inputs)',
        "print(result.get_response())",
    ]
    return "\n".join(lines)
