"""GET /api/v1/models/{name}/versions/{n}/triton/: the zip parses as a Triton model repository
whose config.pbtxt (read with the ModelConfig protobuf tritonclient ships) matches the signature."""

from __future__ import annotations

import importlib.util
import io
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from google.protobuf import text_format
from onnx import TensorProto, helper

from registry import services
from tests.conftest import actor_for, token_client
from tests.registry import onnx_files
from tests.registry.conftest import register, validated


def _triton_model_config_module():
    """tritonclient's ModelConfig protobuf, loaded on its own: importing the tritonclient.grpc
    package registers the v2 gRPC service's `inference.*` messages in protobuf's default pool,
    which KServe's client (tests/runtime) registers too, and one process cannot hold both."""
    spec = importlib.util.find_spec("tritonclient")
    path = Path(spec.submodule_search_locations[0]) / "grpc" / "model_config_pb2.py"
    module_spec = importlib.util.spec_from_file_location("_triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


model_config_pb2 = _triton_model_config_module()

TYPES = {"FP32": "TYPE_FP32", "INT64": "TYPE_INT64", "BYTES": "TYPE_STRING"}


@pytest.fixture
def model(team, scientist):
    return services.model_create(
        actor=actor_for(scientist, team), team=team, name="fraud.v2", description="", tags={}
    )


def _version(model, scientist, team, proto: onnx.ModelProto, tmp_path, name="m.onnx"):
    path = onnx_files.save(proto, tmp_path / name)
    return validated(register(actor_for(scientist, team), model, path)), path


def _export(client, url: str) -> tuple[model_config_pb2.ModelConfig, zipfile.ZipFile]:
    response = client.get(url)
    assert response.status_code == 200, response.content[:500]
    assert response["Content-Type"] == "application/zip"
    bundle = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    config = text_format.Parse(
        bundle.read(f"{url.split('/')[4]}/config.pbtxt").decode(), model_config_pb2.ModelConfig()
    )
    return config, bundle


def _classifier() -> onnx.ModelProto:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)).astype(np.float32)
    model = LogisticRegression().fit(x, (x[:, 0] > 0).astype(np.int64))
    return to_onnx(model, x[:1], options={id(model): {"zipmap": False}})


def test_classifier_exports_with_a_dynamic_batch_dimension(db, model, scientist, team, tmp_path):
    version, path = _version(model, scientist, team, _classifier(), tmp_path)
    assert version.status == "ready"
    config, bundle = _export(
        token_client(scientist, team), "/api/v1/models/fraud.v2/versions/1/triton/"
    )
    assert sorted(bundle.namelist()) == ["fraud.v2/1/model.onnx", "fraud.v2/config.pbtxt"]
    assert bundle.read("fraud.v2/1/model.onnx") == path.read_bytes()
    assert (config.name, config.platform, config.backend) == (
        "fraud.v2",
        "onnxruntime_onnx",
        "onnxruntime",
    )
    assert config.max_batch_size == 64
    assert config.HasField("dynamic_batching")
    signature = version.signature
    assert [i.name for i in config.input] == [s["name"] for s in signature["inputs"]]
    assert [o.name for o in config.output] == [s["name"] for s in signature["outputs"]]
    for tensor, spec in zip(
        [*config.input, *config.output], [*signature["inputs"], *signature["outputs"]], strict=True
    ):
        assert model_config_pb2.DataType.Name(tensor.data_type) == TYPES[spec["datatype"]]
        assert spec["shape"][0] == -1
        if len(spec["shape"]) > 1:
            assert list(tensor.dims) == spec["shape"][1:]
            assert not tensor.HasField("reshape")
        else:  # the label: one value per row
            assert list(tensor.dims) == [1]
            assert list(tensor.reshape.shape) == []
    assert [(i.name, list(i.dims)) for i in config.input] == [("X", [3])]
    assert [(o.name, list(o.dims)) for o in config.output] == [
        ("label", [1]),
        ("probabilities", [2]),
    ]


def test_fixed_first_dimension_is_exported_without_batching(db, model, scientist, team, tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Identity", ["in"], ["out"])],
        "fixed",
        [helper.make_tensor_value_info("in", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3])],
    )
    _version(model, scientist, team, onnx_files._model(graph), tmp_path)
    config, _ = _export(token_client(scientist, team), "/api/v1/models/fraud.v2/versions/1/triton/")
    assert config.max_batch_size == 0
    assert not config.HasField("dynamic_batching")
    assert [(t.name, list(t.dims)) for t in [*config.input, *config.output]] == [
        ("in", [1, 3]),
        ("out", [1, 3]),
    ]


def test_strings_and_awkward_tensor_names_survive_the_text_format(
    db, model, scientist, team, tmp_path
):
    awkward = 'price "usd" \\ ünïcode\n'
    graph = helper.make_graph(
        [
            helper.make_node("Identity", [awkward], ["out"]),
            helper.make_node("Identity", ["city"], ["city_out"]),
        ],
        "awkward",
        [
            helper.make_tensor_value_info(awkward, TensorProto.FLOAT, [None, 2]),
            helper.make_tensor_value_info("city", TensorProto.STRING, [None, 1]),
        ],
        [
            helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 2]),
            helper.make_tensor_value_info("city_out", TensorProto.STRING, [None, 1]),
        ],
    )
    version, _ = _version(model, scientist, team, onnx_files._model(graph), tmp_path)
    assert version.status == "ready", version.status_reason
    config, _ = _export(
        token_client(scientist, team), "/api/v1/models/fraud.v2/versions/1/triton/?max_batch_size=8"
    )
    assert config.max_batch_size == 8
    assert [(i.name, model_config_pb2.DataType.Name(i.data_type)) for i in config.input] == [
        (awkward, "TYPE_FP32"),
        ("city", "TYPE_STRING"),
    ]


def test_refusals_are_clear_and_scoped(db, model, scientist, team, outsider, tmp_path):
    from rest_framework.test import APIClient

    path = onnx_files.save(_classifier(), tmp_path / "m.onnx")
    register(actor_for(scientist, team), model, path)  # pending: not validated yet
    url = "/api/v1/models/fraud.v2/versions/1/triton/"
    client = token_client(scientist, team)

    pending = client.get(url)
    assert pending.status_code == 409
    assert pending.json()["error"] == (
        "fraud.v2:1 is pending; only ready versions have a signature to export."
    )
    assert client.get("/api/v1/models/fraud.v2/versions/2/triton/").status_code == 404
    assert token_client(outsider, outsider.teams.first()).get(url).status_code == 404
    assert APIClient().get(url).status_code == 401

    from registry.models import ModelVersion

    validated(ModelVersion.objects.get(model=model, number=1))
    for bad in ("0", "abc", "99999999999"):
        answer = client.get(f"{url}?max_batch_size={bad}")
        assert answer.status_code == 400
        assert answer.json()["error"].startswith("max_batch_size is a whole number")


def test_the_export_is_typed_in_the_schema(db, scientist, team):
    schema = token_client(scientist, team).get("/api/schema/?format=json").json()
    operation = schema["paths"]["/api/v1/models/{model_name}/versions/{number}/triton/"]["get"]
    assert operation["operationId"] == "v1_models_versions_triton_retrieve"
    # 401 and 403 are documented on every operation (common/schema.py).
    assert set(operation["responses"]) == {"200", "400", "401", "403", "404", "409"}
    assert "application/zip" in operation["responses"]["200"]["content"]
    assert [p["name"] for p in operation["parameters"] if p["in"] == "query"] == ["max_batch_size"]
