"""Real ONNX models and real runtime processes on free 127.0.0.1 ports."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.runtime.helpers import (
    IDENTITY_TYPES,
    MLP_INPUTS,
    MisbehavingUpstream,
    RuntimeProcess,
    start_gateway,
    start_server,
)


def _save(model: onnx.ModelProto, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / "model.onnx")
    return folder


@pytest.fixture(scope="session")
def iris_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LogisticRegression on iris (skl2onnx: label + ZipMap probabilities) with a profile."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    features = features.astype(np.float32)
    classifier = LogisticRegression(max_iter=1000).fit(features, labels)
    folder = _save(to_onnx(classifier, features[:1]), tmp_path_factory.mktemp("iris"))
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    profile_features = []
    for index, name in enumerate(names):
        counts, edges = np.histogram(features[:, index], bins=5)
        profile_features.append(
            {
                "name": name,
                "input": "X",
                "index": index,
                "kind": "numeric",
                "edges": edges.tolist(),
                "counts": counts.tolist(),
            }
        )
    profile = {
        "rows": len(features),
        "features": profile_features,
        "prediction": {"kind": "categorical", "categories": {"0": 50, "1": 50, "2": 50}},
    }
    (folder / "reference.json").write_text(json.dumps(profile))
    return folder


def _mlp() -> onnx.ModelProto:
    generator = np.random.default_rng(7)
    hidden = 32
    weights = {
        "W1": generator.standard_normal((MLP_INPUTS, hidden)).astype(np.float32) * 0.1,
        "B1": generator.standard_normal(hidden).astype(np.float32) * 0.1,
        "W2": generator.standard_normal((hidden, 1)).astype(np.float32) * 0.1,
        "B2": generator.standard_normal(1).astype(np.float32) * 0.1,
    }
    nodes = [
        helper.make_node("MatMul", ["X", "W1"], ["hidden_linear"]),
        helper.make_node("Add", ["hidden_linear", "B1"], ["hidden_biased"]),
        helper.make_node("Relu", ["hidden_biased"], ["hidden"]),
        helper.make_node("MatMul", ["hidden", "W2"], ["output_linear"]),
        helper.make_node("Add", ["output_linear", "B2"], ["value"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", MLP_INPUTS])],
        [helper.make_tensor_value_info("value", TensorProto.FLOAT, ["batch", 1])],
        initializer=[numpy_helper.from_array(array, name) for name, array in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="session")
def mlp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small MLP regressor with 100 float inputs, built with onnx.helper."""
    return _save(_mlp(), tmp_path_factory.mktemp("mlp"))


@pytest.fixture(scope="session")
def identity_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One Identity per v2 datatype: in_<DATATYPE> -> out_<DATATYPE>, shape [batch, 3]."""
    inputs = [
        helper.make_tensor_value_info(f"in_{name}", kind, ["batch", 3])
        for name, kind in IDENTITY_TYPES.items()
    ]
    outputs = [
        helper.make_tensor_value_info(f"out_{name}", kind, ["batch", 3])
        for name, kind in IDENTITY_TYPES.items()
    ]
    nodes = [
        helper.make_node("Identity", [f"in_{name}"], [f"out_{name}"]) for name in IDENTITY_TYPES
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "identity", inputs, outputs),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return _save(model, tmp_path_factory.mktemp("identity"))


@pytest.fixture(scope="session")
def iris_server(iris_dir: Path) -> Iterator[RuntimeProcess]:
    """Iris served as version 1."""
    server = start_server(iris_dir, "iris", "1")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def iris_server_v2(iris_dir: Path) -> Iterator[RuntimeProcess]:
    """The same iris model served as version 2 (a second process)."""
    server = start_server(iris_dir, "iris", "2")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mlp_server(mlp_dir: Path) -> Iterator[RuntimeProcess]:
    """The MLP served as version 1."""
    server = start_server(mlp_dir, "mlp", "1", "--max-rows", "64", "--max-body-bytes", "65536")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def identity_server(identity_dir: Path) -> Iterator[RuntimeProcess]:
    """The identity model served as version 1."""
    server = start_server(identity_dir, "identity", "1")
    yield server
    server.stop()


@pytest.fixture
def failing_upstream() -> Iterator[MisbehavingUpstream]:
    """An upstream that answers 500 to everything."""
    upstream = MisbehavingUpstream("fail")
    yield upstream
    upstream.close()


@pytest.fixture
def hanging_upstream() -> Iterator[MisbehavingUpstream]:
    """An upstream that reads requests and never answers."""
    upstream = MisbehavingUpstream("hang")
    yield upstream
    upstream.close()


@pytest.fixture
def slow_upstream() -> Iterator[MisbehavingUpstream]:
    """An upstream that answers 200 after one second."""
    upstream = MisbehavingUpstream("slow")
    yield upstream
    upstream.close()


@pytest.fixture
def gateway() -> Iterator[RuntimeProcess]:
    """A fresh gateway with an empty route table."""
    process = start_gateway()
    yield process
    process.stop()
