"""The reference profile: exact format, bounded memory on big and wide inputs."""

import random

import numpy as np
import onnx
import pytest

from common.errors import ApplicationError
from registry import profiling
from registry.inspection import TensorInfo

FLOAT = onnx.TensorProto.FLOAT
STRING = onnx.TensorProto.STRING


def write(tmp_path, header, rows):
    path = tmp_path / "reference.csv"
    lines = [",".join(header)] + [",".join(str(value) for value in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_format_for_one_2d_input(tmp_path):
    rows = [(i, "a" if i % 3 else "b") for i in range(1, 101)]
    path = write(tmp_path, ["x", "code"], [(x, 1 if c == "a" else 0) for x, c in rows])
    profile = profiling.profile_reference_csv(path, inputs=[TensorInfo("input", FLOAT, (None, 2))])
    assert profile["rows"] == 100 and profile["prediction"] is None
    x, code = profile["features"]
    assert x == {
        "name": "x",
        "input": "input",
        "index": 0,
        "kind": "numeric",
        "edges": [1.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0],
        "counts": [10, 10, 10, 10, 10, 10, 10, 10, 10, 10],
    }
    assert code == {
        "name": "code",
        "input": "input",
        "index": 1,
        "kind": "numeric",
        "edges": [0.0, 0.5, 1.0],
        "counts": [33, 67],
    }


def test_constant_column_keeps_one_closed_bin(tmp_path):
    path = write(tmp_path, ["x"], [(5,)] * 10)
    feature = profiling.profile_reference_csv(path, inputs=[TensorInfo("input", FLOAT, (None, 1))])[
        "features"
    ][0]
    assert (feature["edges"], feature["counts"]) == ([5.0, 5.0], [10])


def test_missing_and_non_finite_cells_are_skipped(tmp_path):
    path = write(tmp_path, ["x", "y"], [(1, 1), ("", 1), ("nan", 1), ("inf", 1), (3, 1)])
    profile = profiling.profile_reference_csv(path, inputs=[TensorInfo("x", FLOAT, (None, 2))])
    assert profile["rows"] == 5
    assert sum(profile["features"][0]["counts"]) == 2
    assert sum(profile["features"][1]["counts"]) == 5


def test_categories_keep_top_fifty_and_other(tmp_path):
    rows = [(f"city{i % 80}",) for i in range(800)] + [("paris",)] * 100
    path = write(tmp_path, ["city"], rows)
    feature = profiling.profile_reference_csv(path, inputs=[TensorInfo("city", STRING, (None,))])[
        "features"
    ][0]
    categories = feature["categories"]
    assert len(categories) == 51
    assert categories["paris"] == 100
    assert categories["__other__"] == 900 - sum(
        v for k, v in categories.items() if k != "__other__"
    )


def test_big_columns_are_sampled_and_counted_exactly(tmp_path, monkeypatch):
    """Past the sample budget, edges come from a reservoir and counts from a second pass."""
    monkeypatch.setattr(profiling, "_SAMPLE_BUDGET", 1_000)
    rng = random.Random(1)
    values = [rng.random() * 100 for _ in range(20_000)]
    path = write(tmp_path, ["x"], [(f"{v:.4f}",) for v in values])
    feature = profiling.profile_reference_csv(path, inputs=[TensorInfo("x", FLOAT, (None, 1))])[
        "features"
    ][0]
    assert sum(feature["counts"]) == 20_000
    edges = np.array(feature["edges"])
    expected = profiling.bin_counts(edges, np.array([float(f"{v:.4f}") for v in values]))
    assert feature["counts"] == expected.tolist()
    assert len(edges) == 11 and all(c > 1_000 for c in feature["counts"])


def test_high_cardinality_categories_stay_bounded(tmp_path):
    rows = [(f"id{i}",) for i in range(50_000)]
    path = write(tmp_path, ["id"], rows)
    feature = profiling.profile_reference_csv(path, inputs=[TensorInfo("id", STRING, (None,))])[
        "features"
    ][0]
    assert len(feature["categories"]) == 51
    assert sum(feature["categories"].values()) == 50_000


def test_several_inputs_need_exact_names(tmp_path):
    path = write(tmp_path, ["a", "c"], [(1, 2)])
    with pytest.raises(ApplicationError) as caught:
        profiling.profile_reference_csv(
            path, inputs=[TensorInfo("a", FLOAT, (None, 1)), TensorInfo("b", FLOAT, (None, 1))]
        )
    assert caught.value.message == (
        "The reference CSV's header must name the model's inputs exactly (a, b)."
    )
