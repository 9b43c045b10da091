"""/metrics on the version server and the gateway count exactly what was sent."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnxruntime
import pytest

from tests.runtime.helpers import (
    IDENTITY_TYPES,
    MLP_INPUTS,
    iris_rows,
    metric,
    post_json,
    put_routes,
    routes,
    scrape,
    start_gateway,
    start_server,
)

BASE = {"endpoint": "shop", "version": "4", "variant": "candidate"}


@pytest.fixture(scope="module")
def counted_server(iris_dir):
    """A fresh iris server whose counters start at zero."""
    server = start_server(iris_dir, "iris", "4", "--variant", "candidate", endpoint="shop")
    yield server
    server.stop()


def test_server_counts_equal_requests_sent(counted_server, iris_dir):
    url = counted_server.url + "/v2/models/iris/infer"
    batches = [iris_rows(count) for count in (1, 3, 8, 2, 5)]
    for rows in batches:
        document = {
            "inputs": [
                {"name": "X", "datatype": "FP32", "shape": list(rows.shape), "data": rows.tolist()}
            ]
        }
        assert post_json(url, document)[0] == 200
    invocation = iris_rows(4)
    assert (
        post_json(counted_server.url + "/invocations", {"inputs": {"X": invocation.tolist()}})[0]
        == 200
    )
    bad = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
    for _ in range(3):
        assert post_json(url, bad)[0] == 400
    assert post_json(counted_server.url + "/v2/models/other/infer", bad)[0] == 404
    successes = len(batches) + 1

    samples = scrape(counted_server.url)
    labels = {**BASE, "component": "server"}
    assert metric(samples, "modeldeck_requests_total", outcome="success", **labels) == successes
    assert metric(samples, "modeldeck_requests_total", outcome="client_error", **labels) == 3
    assert metric(samples, "modeldeck_requests_total", outcome="server_error", **labels) == 0
    assert metric(samples, "modeldeck_request_duration_seconds_count", **labels) == successes + 3
    assert metric(samples, "modeldeck_inference_duration_seconds_count", **labels) == successes
    assert metric(samples, "modeldeck_in_flight_requests", **labels) == 0
    all_rows = np.concatenate([*batches, invocation])
    assert metric(samples, "modeldeck_batch_rows_count", **labels) == successes
    assert metric(samples, "modeldeck_batch_rows_sum", **labels) == len(all_rows)

    profile = json.loads((iris_dir / "reference.json").read_text())
    for index, feature in enumerate(profile["features"]):
        values = all_rows[:, index].astype(np.float64)
        for edge in feature["edges"]:
            bucket = metric(
                samples,
                "modeldeck_feature_value_bucket",
                feature=feature["name"],
                le=_go_float(edge),
                **labels,
            )
            assert bucket == np.count_nonzero(values <= edge), (feature["name"], edge)
        assert metric(
            samples, "modeldeck_feature_value_count", feature=feature["name"], **labels
        ) == len(all_rows)

    session = onnxruntime.InferenceSession(str(iris_dir / "model.onnx"))
    expected_labels = np.concatenate(
        [session.run(["output_label"], {"X": rows})[0] for rows in [*batches, invocation]]
    )
    for label in ("0", "1", "2"):
        assert metric(
            samples, "modeldeck_predictions_total", **{"class": label}, **labels
        ) == np.count_nonzero(expected_labels == int(label))


def _go_float(value: float) -> str:
    from prometheus_client.utils import floatToGoString

    return floatToGoString(value)


def test_default_features_and_regression_values_without_a_profile(mlp_server):
    before = scrape(mlp_server.url)
    rows = np.random.default_rng(5).standard_normal((6, MLP_INPUTS)).astype(np.float32)
    document = {
        "inputs": [
            {"name": "X", "datatype": "FP32", "shape": [6, MLP_INPUTS], "data": rows.tolist()}
        ]
    }
    assert post_json(mlp_server.url + "/v2/models/mlp/infer", document)[0] == 200
    after = scrape(mlp_server.url)
    features = {
        dict(labels)["feature"] for name, labels in after if name == "modeldeck_feature_value_count"
    }
    assert features == {f"X[{column}]" for column in range(32)}

    def grew(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert grew("modeldeck_feature_value_count", feature="X[0]") == 6
    assert grew("modeldeck_feature_value_bucket", feature="X[5]", le="0.0") == np.count_nonzero(
        rows[:, 5] <= 0
    )
    assert grew("modeldeck_prediction_value_count") == 6


def test_gateway_counts_equal_requests_sent(iris_server, iris_server_v2):
    gateway = start_gateway(endpoint="shop")
    try:
        table = routes(("1", iris_server, 70, "primary"), ("2", iris_server_v2, 30, "candidate"))
        assert put_routes(gateway, table)[0] == 200
        document = {
            "inputs": [
                {"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}
            ]
        }
        served = {"1": 0, "2": 0}
        for _ in range(40):
            status, _, payload = _post(gateway.url + "/v2/models/iris/infer", document)
            assert status == 200
            served[json.loads(payload)["model_version"]] += 1
        bad = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
        for _ in range(2):
            assert (
                post_json(gateway.url + "/v2/models/iris/infer", bad, {"X-Model-Version": "2"})[0]
                == 400
            )

        samples = scrape(gateway.url)
        gateway_labels = {"endpoint": "shop", "component": "gateway"}
        assert (
            metric(
                samples,
                "modeldeck_requests_total",
                version="1",
                variant="primary",
                outcome="success",
                **gateway_labels,
            )
            == served["1"]
        )
        assert (
            metric(
                samples,
                "modeldeck_requests_total",
                version="2",
                variant="candidate",
                outcome="success",
                **gateway_labels,
            )
            == served["2"]
        )
        assert (
            metric(
                samples,
                "modeldeck_requests_total",
                version="2",
                outcome="client_error",
                **gateway_labels,
            )
            == 2
        )
        assert metric(samples, "modeldeck_request_duration_seconds_count", **gateway_labels) == 42
        assert metric(samples, "modeldeck_requests_total", component="server") == 0
    finally:
        gateway.stop()


def _post(url: str, document: dict):
    from tests.runtime.helpers import request

    return request("POST", url, json.dumps(document).encode())


def test_categorical_features_and_bad_profile_entries(identity_dir, tmp_path):
    folder = tmp_path / "identity"
    shutil.copytree(identity_dir, folder)
    profile = {
        "rows": 10,
        "features": [
            {
                "name": "color",
                "input": "in_BYTES",
                "index": 0,
                "kind": "categorical",
                "categories": {"red": 6, "blue": 4},
            },
            {"name": "size", "input": "in_FP32", "index": 1, "kind": "numeric", "edges": [0, 1]},
            {"name": "ghost", "input": "nope", "index": 0, "kind": "numeric", "edges": [0, 1]},
            {"name": "far", "input": "in_FP32", "index": 7, "kind": "numeric", "edges": [0, 1]},
        ],
    }
    (folder / "reference.json").write_text(json.dumps(profile))
    server = start_server(folder, "identity", "1", endpoint="paint")
    try:
        rows = [["red", "x", "y"], ["green", "x", "y"], ["red", "x", "y"]]
        inputs = [
            {
                "name": f"in_{name}",
                "datatype": name,
                "shape": [3, 3],
                "data": [[False] * 3] * 3 if name == "BOOL" else [[0, 0.5, 2]] * 3,
            }
            for name in IDENTITY_TYPES
            if name != "BYTES"
        ]
        inputs.append({"name": "in_BYTES", "datatype": "BYTES", "shape": [3, 3], "data": rows})
        status, answer = post_json(server.url + "/v2/models/identity/infer", {"inputs": inputs})
        assert status == 400  # integers refuse 0.5: nothing is counted for a refused request
        for entry in inputs:
            if entry["datatype"] not in ("BYTES", "BOOL", "FP16", "FP32", "FP64"):
                entry["data"] = [[0, 1, 2]] * 3
        status, answer = post_json(server.url + "/v2/models/identity/infer", {"inputs": inputs})
        assert status == 200, answer
        samples = scrape(server.url)
        counts = {
            category: metric(
                samples, "modeldeck_feature_category_total", feature="color", category=category
            )
            for category in ("red", "blue", "__other__")
        }
        assert counts == {"red": 2, "blue": 0, "__other__": 1}
        assert metric(samples, "modeldeck_feature_value_bucket", feature="size", le="0.0") == 0
        assert metric(samples, "modeldeck_feature_value_bucket", feature="size", le="1.0") == 3
        features = {dict(labels).get("feature") for name, labels in samples}
        assert "ghost" not in features
        assert "far" not in features
    finally:
        server.stop()


@pytest.mark.parametrize("shared", [True, False])
def test_feature_buckets_match_a_value_by_value_count(shared):
    """Both batch paths (one shared set of bounds, or per-feature bounds) count like bisect."""
    from bisect import bisect_left

    from modeldeck_runtime.metrics import FeatureGroup

    bounds = [[-1.0, 0.0, 0.5, 2.0]] * 3 if shared else [[-1.0, 0.0], [0.5, 2.0, 3.0], [0.0]]
    group = FeatureGroup("X", ["a", "b", "c"], [0, 2, 4], bounds)
    assert (group.shared_bounds is not None) == shared
    generator = np.random.default_rng(5)
    batch = generator.choice([-1.0, 0.0, 0.5, 2.0, 3.0, -7.0, 9.0, np.nan, np.inf], (200, 5))
    batch[:, 1] = generator.standard_normal(200)
    group.observe(batch.astype(np.float32))
    for feature, column in enumerate([0, 2, 4]):
        expected = np.zeros(len(group.bound_lists[feature]) + 1, dtype=np.int64)
        for value in batch[:, column]:
            if np.isfinite(value):
                expected[bisect_left(group.bound_lists[feature], value)] += 1
        counts, total = group.totals(feature)
        assert counts[: len(expected)].tolist() == expected.tolist()
        assert counts[len(expected) :].sum() == 0
        finite = batch[:, column][np.isfinite(batch[:, column])]
        assert total == pytest.approx(float(finite.sum()))
