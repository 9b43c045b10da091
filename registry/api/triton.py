"""Export a version as a Triton Inference Server model repository: a zip holding
`NAME/config.pbtxt` (inputs, outputs, datatypes and dynamic batching from the signature) and
`NAME/1/model.onnx`, for teams that serve at scale with Triton's onnxruntime backend."""

import shutil
import tempfile
import zipfile

from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.decorators import api_view

from accounts.actor import Actor
from common.errors import ApplicationError
from common.schema import ErrorSerializer
from registry import selectors
from registry.models import ArtifactKind, VersionStatus
from registry.storage import open_artifact

# Triton's names for the Open Inference Protocol datatypes the signature uses.
TRITON_DATATYPES = {
    "BOOL": "TYPE_BOOL",
    "UINT8": "TYPE_UINT8",
    "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64",
    "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "FP16": "TYPE_FP16",
    "FP32": "TYPE_FP32",
    "FP64": "TYPE_FP64",
    "BF16": "TYPE_BF16",
    "BYTES": "TYPE_STRING",
}
DEFAULT_MAX_BATCH_SIZE = 64
MAX_BATCH_SIZE_LIMIT = 1 << 20


def _quoted(text: str) -> str:
    """A protobuf text-format string literal: tensor names come from the uploaded file, so
    quotes, backslashes and anything unprintable are escaped byte by byte."""
    escaped = "".join(
        chr(byte) if 0x20 <= byte < 0x7F and byte not in (0x22, 0x5C) else f"\\{byte:03o}"
        for byte in text.encode("utf-8")
    )
    return f'"{escaped}"'


def _batched(signature: dict) -> bool:
    """Triton batches along the first dimension only when every tensor has a dynamic one."""
    tensors = [*signature.get("inputs", []), *signature.get("outputs", [])]
    return bool(tensors) and all(spec["shape"] and spec["shape"][0] == -1 for spec in tensors)


def _tensor(spec: dict, *, batched: bool) -> str:
    dims = list(spec["shape"][1:] if batched else spec["shape"])
    lines = [
        f"    name: {_quoted(spec['name'])}",
        f"    data_type: {TRITON_DATATYPES[spec['datatype']]}",
    ]
    if dims:
        lines.append(f"    dims: [ {', '.join(str(d) for d in dims)} ]")
    else:
        # A tensor that is only the batch dimension: Triton wants one element, reshaped away.
        lines.append("    dims: [ 1 ]")
        lines.append("    reshape: { shape: [ ] }")
    return "  {\n" + "\n".join(lines) + "\n  }"


def triton_config(*, name: str, signature: dict, max_batch_size: int) -> str:
    """config.pbtxt for Triton's onnxruntime backend, from a validated version's signature."""
    for spec in signature.get("outputs", []):
        if spec.get("type"):
            raise ApplicationError(
                f"Output {spec['name']!r} is a {spec['type']}, not a tensor; Triton's "
                "onnxruntime backend serves tensors only. Convert without ZipMap "
                "(skl2onnx option zipmap=False) and upload again.",
                {"output": spec["name"]},
                status=409,
            )
    batched = _batched(signature)
    inputs = ",\n".join(_tensor(spec, batched=batched) for spec in signature["inputs"])
    outputs = ",\n".join(_tensor(spec, batched=batched) for spec in signature["outputs"])
    lines = [
        f"name: {_quoted(name)}",
        'platform: "onnxruntime_onnx"',
        'backend: "onnxruntime"',
        f"max_batch_size: {max_batch_size if batched else 0}",
        f"input [\n{inputs}\n]",
        f"output [\n{outputs}\n]",
    ]
    if batched:
        lines.append("dynamic_batching { }")
    lines.append("version_policy: { specific: { versions: [ 1 ] } }")
    return "\n".join(lines) + "\n"


def _max_batch_size(raw: str | None) -> int:
    if raw in (None, ""):
        return DEFAULT_MAX_BATCH_SIZE
    if not raw.isdigit() or not 0 < int(raw) <= MAX_BATCH_SIZE_LIMIT:
        raise ApplicationError(
            f"max_batch_size is a whole number from 1 to {MAX_BATCH_SIZE_LIMIT}.",
            {"max_batch_size": raw[:20]},
        )
    return int(raw)


@extend_schema(
    operation_id="v1_models_versions_triton_retrieve",
    parameters=[
        OpenApiParameter(
            "max_batch_size",
            int,
            description=(
                f"Triton's max_batch_size when every tensor has a dynamic first dimension "
                f"(default {DEFAULT_MAX_BATCH_SIZE}); otherwise the export does not batch."
            ),
        )
    ],
    responses={
        (200, "application/zip"): OpenApiResponse(
            OpenApiTypes.BINARY,
            description="A zip of NAME/config.pbtxt and NAME/1/model.onnx.",
        ),
        400: ErrorSerializer,
        404: ErrorSerializer,
        409: ErrorSerializer,
    },
)
@api_view(["GET"])
def version_triton_export(request, model_name: str, number: int):
    """A ready version as a Triton model repository (zip), for any member of its team."""
    actor = Actor.from_request(request)
    model = selectors.model_get_for_actor(actor=actor, name=model_name)
    version = selectors.version_get(actor=actor, model=model, number=int(number))
    if version.status != VersionStatus.READY:
        raise ApplicationError(
            f"{version.reference} is {version.status}; only ready versions have a signature "
            "to export.",
            {"status": version.status},
            status=409,
        )
    config = triton_config(
        name=model.name,
        signature=version.signature,
        max_batch_size=_max_batch_size(request.query_params.get("max_batch_size")),
    )
    artifact = next(a for a in version.artifacts.all() if a.kind == ArtifactKind.MODEL)
    # Spooled to disk, not memory: a model may be as large as the upload limit.
    bundle = tempfile.TemporaryFile()  # noqa: SIM115 (FileResponse closes it)
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.writestr(f"{model.name}/config.pbtxt", config, zipfile.ZIP_DEFLATED)
        info = zipfile.ZipInfo(f"{model.name}/1/model.onnx")
        info.compress_type = zipfile.ZIP_DEFLATED
        with open_artifact(artifact) as source, archive.open(info, "w", force_zip64=True) as target:
            shutil.copyfileobj(source, target, 1 << 20)
    bundle.seek(0)
    return FileResponse(
        bundle,
        as_attachment=True,
        filename=f"{model.name}-{version.number}-triton.zip",
        content_type="application/zip",
    )
