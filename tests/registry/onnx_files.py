"""Real ONNX files for the registry tests: built with the onnx helper API, converted from
scikit-learn with skl2onnx, or shipped inside installed packages."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
SITE = Path(onnx.__file__).resolve().parent.parent
ONNX_TEST_DATA = Path(onnx.__file__).resolve().parent / "backend" / "test" / "data"
ORT_DATASETS = Path(onnxruntime.__file__).resolve().parent / "datasets"


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def _model(graph: onnx.GraphProto, *, opsets=None, ir_version: int = 8) -> onnx.ModelProto:
    model = helper.make_model(
        graph, opset_imports=opsets or [helper.make_opsetid("", OPSET)], producer_name="tests"
    )
    model.ir_version = ir_version
    return model


def linear_regressor(features: int = 3, *, seed: int = 0) -> onnx.ModelProto:
    """prediction = features @ W + b, input `features` [N, k] FP32, output [N, 1]."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(features, 1)).astype(np.float32)
    bias = np.array([0.5], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "W"], ["product"]),
            helper.make_node("Add", ["product", "b"], ["prediction"]),
        ],
        "linear",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("prediction", TensorProto.FLOAT, ["batch", 1])],
        [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "b")],
    )
    return _model(graph)


def mlp_classifier(inputs: int = 4, hidden: int = 8, classes: int = 3) -> onnx.ModelProto:
    """A two-layer MLP: `x` [N, 4] → `probabilities` [N, 3] FP32 and `label` [N] INT64."""
    rng = np.random.default_rng(1)
    w1 = rng.normal(size=(inputs, hidden)).astype(np.float32)
    w2 = rng.normal(size=(hidden, classes)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "W1"], ["h"]),
            helper.make_node("Relu", ["h"], ["a"]),
            helper.make_node("Gemm", ["a", "W2"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
            helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, inputs])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, classes]),
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
        ],
        [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2")],
    )
    return _model(graph)


def string_encoder() -> onnx.ModelProto:
    """A string input: `city` [N] BYTES → `code` [N] INT64 through ai.onnx.ml LabelEncoder."""
    graph = helper.make_graph(
        [
            helper.make_node(
                "LabelEncoder",
                ["city"],
                ["code"],
                domain="ai.onnx.ml",
                keys_strings=["paris", "oslo"],
                values_int64s=[1, 2],
                default_int64=0,
            )
        ],
        "encoder",
        [helper.make_tensor_value_info("city", TensorProto.STRING, [None])],
        [helper.make_tensor_value_info("code", TensorProto.INT64, [None])],
    )
    return _model(
        graph, opsets=[helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", 3)]
    )


def two_inputs() -> onnx.ModelProto:
    """Two named inputs, `age` [N, 1] FP32 and `city` [N, 1] BYTES, one output."""
    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["age"], ["age_out"]),
            helper.make_node("Identity", ["city"], ["city_out"]),
        ],
        "two",
        [
            helper.make_tensor_value_info("age", TensorProto.FLOAT, [None, 1]),
            helper.make_tensor_value_info("city", TensorProto.STRING, [None, 1]),
        ],
        [
            helper.make_tensor_value_info("age_out", TensorProto.FLOAT, [None, 1]),
            helper.make_tensor_value_info("city_out", TensorProto.STRING, [None, 1]),
        ],
    )
    return _model(graph)


def custom_domain() -> onnx.ModelProto:
    """One node from a domain that would need a custom-operator library."""
    graph = helper.make_graph(
        [helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example.custom")],
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    return _model(
        graph, opsets=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.example.custom", 1)]
    )


def unknown_microsoft_op() -> onnx.ModelProto:
    """A `com.microsoft` operator that onnxruntime does not ship."""
    graph = helper.make_graph(
        [helper.make_node("NotAnOrtOperator", ["x"], ["y"], domain="com.microsoft")],
        "ms",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    return _model(
        graph, opsets=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)]
    )


def external_data(location: str, *, length: int = 16) -> onnx.ModelProto:
    """An initializer whose bytes live in an external file at `location`."""
    model = linear_regressor(features=2)
    weights = model.graph.initializer[0]
    weights.ClearField("raw_data")
    weights.data_location = TensorProto.EXTERNAL
    for key, value in {"location": location, "offset": "0", "length": str(length)}.items():
        entry = weights.external_data.add()
        entry.key, entry.value = key, value
    return model


def huge_declared_tensor() -> onnx.ModelProto:
    """A ~100-byte initializer that declares 10^10 floats (40 GB) and holds none of them."""
    model = linear_regressor(features=2)
    weights = model.graph.initializer[0]
    weights.ClearField("raw_data")
    del weights.dims[:]
    weights.dims.extend([100_000, 100_000])
    return model


def memory_hog(side: int = 16_000) -> onnx.ModelProto:
    """Consistent and tiny on disk, but materialises a side x side float matrix at run time."""
    shape = numpy_helper.from_array(np.array([side, side], dtype=np.int64), "shape")
    graph = helper.make_graph(
        [
            helper.make_node(
                "ConstantOfShape",
                ["shape"],
                ["big"],
                value=numpy_helper.from_array(np.array([1.0], dtype=np.float32)),
            ),
            helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
            helper.make_node("Add", ["x", "total"], ["y"]),
        ],
        "hog",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [shape],
    )
    return _model(graph)


def slow_loop(iterations: int = 10**12) -> onnx.ModelProto:
    """A Loop that adds one, `iterations` times: valid, small, and never finishes."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["acc_in", "one"], ["acc_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [1]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [1]),
        ],
        [numpy_helper.from_array(np.array([1.0], dtype=np.float32), "one")],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trips", "cond", "x"], ["y"], body=body)],
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [
            numpy_helper.from_array(np.array(iterations, dtype=np.int64), "trips"),
            numpy_helper.from_array(np.array(True), "cond"),
        ],
    )
    return _model(graph)


def old_opset() -> onnx.ModelProto:
    """A valid graph stamped with opset 5, older than onnxruntime guarantees."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "old",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    return _model(graph, opsets=[helper.make_opsetid("", 5)], ir_version=3)


def iris():
    from sklearn.datasets import load_iris

    features, labels = load_iris(return_X_y=True)
    return features.astype(np.float32), labels


def sklearn_onnx(estimator) -> onnx.ModelProto:
    """Fit `estimator` on iris and convert it with skl2onnx (input `float_input` [N, 4])."""
    import warnings

    from skl2onnx import to_onnx
    from sklearn.exceptions import ConvergenceWarning

    features, labels = iris()
    with warnings.catch_warnings():
        # A few iterations are enough for a test model; convergence does not matter here.
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator.fit(features, labels)
    return to_onnx(estimator, features[:1], target_opset={"": OPSET, "ai.onnx.ml": 3})


def pickle_bytes() -> bytes:
    """What `pickle.dumps({"weights": [1, 2, 3]}, protocol=4)` writes, spelled out by hand so
    that no test imports pickle: a protocol-4 header, a frame, a tiny dict."""
    return bytes.fromhex("80049518000000000000007d948c0777656967687473945d94284b014b024b0365732e")


def zip_bytes(tmp_path: Path) -> bytes:
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("data.pkl", "not really")
    return archive.read_bytes()
