"""Smoke inference from real data: validation runs the version's reference rows when it has
them (a failure there is invalid), else zeros (a failure there only warns once the model loaded
and passed the graph checks); the rows travel to version servers as smoke.json."""

import json

import numpy as np
import onnx
import pytest
from django.test import Client
from onnx import TensorProto, helper, numpy_helper

from registry import validation
from registry.storage import materialize_version
from registry.uploads import HashedUpload
from tests.registry import onnx_files
from tests.registry.conftest import register, validated

pytestmark = pytest.mark.django_db

WARNING = (
    "smoke input outside the model's domain; upload a reference CSV to smoke-test with real rows"
)


def category_lookup() -> onnx.ModelProto:
    """`color` [N] BYTES → `embedding` [N, 2]: a label encoder whose unknown categories map to
    index 99, which the Gather after it refuses (only red, green and blue are in the domain)."""
    graph = helper.make_graph(
        [
            helper.make_node(
                "LabelEncoder",
                ["color"],
                ["index"],
                domain="ai.onnx.ml",
                keys_strings=["red", "green", "blue"],
                values_int64s=[0, 1, 2],
                default_int64=99,
            ),
            helper.make_node("Gather", ["table", "index"], ["embedding"], axis=0),
        ],
        "category",
        [helper.make_tensor_value_info("color", TensorProto.STRING, [None])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [None, 2])],
        [numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(3, 2), "table")],
    )
    return onnx_files._model(
        graph, opsets=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    )


def stepped_range() -> onnx.ModelProto:
    """`x` [N, 1], `step` [1] → `y` = 2x and `positions` = Range(0, 10, step): a step of zero
    is outside the domain (Range refuses it)."""
    graph = helper.make_graph(
        [
            helper.make_node("Squeeze", ["step"], ["delta"]),
            helper.make_node("Range", ["start", "limit", "delta"], ["positions"]),
            helper.make_node("Mul", ["x", "two"], ["y"]),
        ],
        "range",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1]),
            helper.make_tensor_value_info("step", TensorProto.INT64, [1]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1]),
            helper.make_tensor_value_info("positions", TensorProto.INT64, [None]),
        ],
        [
            numpy_helper.from_array(np.array(0, dtype=np.int64), "start"),
            numpy_helper.from_array(np.array(10, dtype=np.int64), "limit"),
            numpy_helper.from_array(np.array([2.0], dtype=np.float32), "two"),
        ],
    )
    return onnx_files._model(graph, opsets=[helper.make_opsetid("", 17)])


def with_reference(actor, registered, model_path, csv_path, text: str):
    csv_path.write_text(text)
    return validated(
        register(actor, registered, model_path, reference=HashedUpload.from_path(csv_path))
    )


COLORS = "color\nred\nblue\ngreen\nred\nblue\ngreen\nred\nblue\ngreen\nred\n"


def test_zeros_outside_the_domain_leave_a_ready_version_with_a_visible_warning(
    scientist_actor, registered, onnx_path, scientist, scientist_api
):
    version = validated(register(scientist_actor, registered, onnx_path(category_lookup())))
    assert (version.status, version.status_reason) == ("ready", "")
    assert version.smoke_warning == WARNING
    assert version.smoke_input is None
    assert version.signature["inputs"] == [{"name": "color", "datatype": "BYTES", "shape": [-1]}]
    smoke = version.validation_report["smoke"]
    assert (smoke["source"], smoke["warning"]) == ("zeros", WARNING)
    assert "indices element out of data bounds, idx=99" in smoke["error"]
    assert "smoke-inference" not in version.validation_report["checks"]
    document = scientist_api.get(f"/api/v1/models/iris/versions/{version.number}/").json()
    assert (document["status"], document["smoke_warning"]) == ("ready", WARNING)
    client = Client()
    client.force_login(scientist)
    page = client.get(f"/models/iris/versions/{version.number}/").content.decode()
    assert 'id="smoke-warning"' in page and "smoke input outside the model&#x27;s domain" in page


def test_reference_rows_smoke_test_the_model_and_become_its_smoke_input(
    scientist_actor, registered, onnx_path, tmp_path
):
    version = with_reference(
        scientist_actor, registered, onnx_path(category_lookup()), tmp_path / "ref.csv", COLORS
    )
    assert (version.status, version.smoke_warning) == ("ready", "")
    assert version.validation_report["smoke"] == {"source": "reference", "rows": 8, "warning": ""}
    assert "smoke-inference" in version.validation_report["checks"]
    assert version.smoke_input == {
        "inputs": [
            {
                "name": "color",
                "datatype": "BYTES",
                "shape": [8],
                "data": ["red", "blue", "green", "red", "blue", "green", "red", "blue"],
            }
        ]
    }


def test_a_smoke_failure_on_reference_rows_is_still_invalid(
    scientist_actor, registered, onnx_path, tmp_path
):
    version = with_reference(
        scientist_actor,
        registered,
        onnx_path(category_lookup()),
        tmp_path / "ref.csv",
        "color\nred\npurple\n",
    )
    assert version.status == "invalid"
    assert version.status_reason.startswith(
        "The model failed a test inference on its reference rows: "
    )
    assert "indices element out of data bounds, idx=99" in version.status_reason
    assert (version.smoke_warning, version.smoke_input) == ("", None)


def test_a_size_input_takes_its_fixed_batch_of_reference_rows(
    scientist_actor, registered, onnx_path, tmp_path
):
    version = with_reference(
        scientist_actor,
        registered,
        onnx_path(stepped_range()),
        tmp_path / "ref.csv",
        "x,step\n1.5,2\n2.5,3\n",
    )
    assert (version.status, version.smoke_warning) == ("ready", "")
    assert version.smoke_input == {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1.5]},
            {"name": "step", "datatype": "INT64", "shape": [1], "data": [2]},
        ]
    }
    without = validated(register(scientist_actor, registered, onnx_path(stepped_range(), "b.onnx")))
    assert (without.status, without.smoke_warning) == ("ready", WARNING)
    assert "delta in Range operator can not be zero" in without.validation_report["smoke"]["error"]


def test_a_model_that_does_not_load_is_still_invalid(tmp_path):
    path = onnx_files.save(onnx_files.custom_domain(), tmp_path / "model.onnx")
    with pytest.raises(validation.Refusal):
        validation.check_file(path, root=tmp_path, max_tensor_bytes=1024**3)


def test_the_model_folder_gets_smoke_json_from_the_reference_rows(
    scientist_actor, registered, onnx_path, tmp_path
):
    version = with_reference(
        scientist_actor, registered, onnx_path(category_lookup()), tmp_path / "ref.csv", COLORS
    )
    folder = tmp_path / "served"
    materialize_version(version, folder)
    smoke = json.loads((folder / "smoke.json").read_text())
    assert smoke == version.smoke_input
    assert len(smoke["inputs"][0]["data"]) == 8
    # The request is one a v2 server accepts: the model answers it.
    import onnxruntime

    session = onnxruntime.InferenceSession(str(folder / "model.onnx"))
    entry = smoke["inputs"][0]
    session.run(None, {"color": np.array(entry["data"], dtype=object).reshape(entry["shape"])})
    # A version without reference rows leaves no stale smoke.json behind.
    plain = validated(register(scientist_actor, registered, onnx_path(category_lookup(), "p.onnx")))
    materialize_version(plain, folder)
    assert not (folder / "smoke.json").exists()
