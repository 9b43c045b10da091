"""Deciding by content in the web process: the parsed and the walked paths agree."""

import pytest
from sklearn.ensemble import RandomForestClassifier

from common.errors import ApplicationError
from registry.inspection import TensorInfo, inspect_model_file
from tests.registry import onnx_files


@pytest.mark.parametrize(
    "build",
    [
        onnx_files.mlp_classifier,
        onnx_files.two_inputs,
        lambda: onnx_files.sklearn_onnx(RandomForestClassifier(n_estimators=3, random_state=0)),
    ],
)
def test_walking_and_parsing_give_the_same_summary(build, tmp_path):
    path = onnx_files.save(build(), tmp_path / "model.onnx")
    parsed = inspect_model_file(path, parse_limit=1 << 30)
    walked = inspect_model_file(path, parse_limit=0)
    assert parsed == walked


def test_summary_of_a_known_model(tmp_path):
    path = onnx_files.save(onnx_files.mlp_classifier(), tmp_path / "model.onnx")
    summary = inspect_model_file(path, parse_limit=0)
    assert summary.inputs == (TensorInfo("x", 1, (None, 4)),)
    assert summary.outputs == (
        TensorInfo("probabilities", 1, (None, 3)),
        TensorInfo("label", 7, (None,)),
    )
    assert (summary.ir_version, summary.opsets, summary.producer) == (8, {"ai.onnx": 17}, "tests")


@pytest.mark.parametrize("cut", [1, 5, 30, 100])
def test_every_truncation_is_caught_on_both_paths(cut, tmp_path):
    whole = onnx_files.save(onnx_files.mlp_classifier(), tmp_path / "model.onnx").read_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(whole[:-cut])
    for limit in (0, 1 << 30):
        with pytest.raises(ApplicationError) as caught:
            inspect_model_file(path, parse_limit=limit)
        assert caught.value.message.startswith(("The file is truncated", "This is not"))


def test_protocol_zero_pickle_is_refused(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"(dp0\nS'weights'\np1\n(lp2\nI1\naI2\nas.")
    with pytest.raises(ApplicationError) as caught:
        inspect_model_file(path, parse_limit=1 << 30)
    assert caught.value.message.startswith("This is not an ONNX model")


def test_a_graph_split_in_two_fields_is_merged_like_protobuf_does(tmp_path):
    """Big files are often written as a small model plus a second `graph` field holding the
    weights; both paths must see the merged graph."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "split",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    head = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    weights = onnx.GraphProto(
        initializer=[numpy_helper.from_array(np.eye(4, dtype=np.float32), "W")]
    ).SerializeToString()
    path = tmp_path / "split.onnx"
    path.write_bytes(head.SerializeToString() + b"\x3a" + bytes([len(weights)]) + weights)
    merged = onnx.load(str(path))
    assert [t.name for t in merged.graph.initializer] == ["W"]
    parsed = inspect_model_file(path, parse_limit=1 << 30)
    walked = inspect_model_file(path, parse_limit=0)
    assert parsed == walked
    assert walked.inputs == (TensorInfo("x", 1, (1, 4)),)
