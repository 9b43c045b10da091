"""The shipped Grafana dashboard queries metrics the runtime really exposes."""

import json
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

DASHBOARD = Path(__file__).resolve().parents[2] / "grafana" / "modeldeck-runtime.json"


def runtime_sample_names() -> set[str]:
    metrics = pytest.importorskip("modeldeck_runtime.metrics")
    names = set()
    for component in ("server", "gateway"):
        serving = metrics.ServingMetrics(endpoint="e", component=component)
        serving.variant("m:1", "primary").record_request(200, 0.01)
        serving.shadow("m:2", "m:1")
        for family in text_string_to_metric_families(serving.render().decode()):
            suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
            names.add(family.name)
            names.update(family.name + suffix for suffix in suffixes.get(family.type, []))
    return names


def test_the_dashboard_is_valid_and_every_query_names_a_runtime_metric():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "modeldeck-runtime"
    expressions = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    assert len(expressions) >= 10
    used = {name for expr in expressions for name in re.findall(r"\bmodeldeck_\w+", expr)}
    exposed = runtime_sample_names()
    assert used - exposed == set()
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


# --- every panel's PromQL against a real Prometheus scraping live runtime processes ---------

SCRAPE_SECONDS = 1
# What Grafana's $__rate_interval becomes for this scrape interval: max(4 x scrape, step + scrape).
RATE_INTERVAL = "5s"
# Panels that cannot apply to a kind of model, and why; every other panel must show data.
NOT_APPLICABLE = {
    "classifier": {"Predicted value p50 / p95 (regressors)": "a classifier predicts classes"},
    "regressor": {
        "Predicted classes per second": "a regressor predicts values",
        "Categorical feature values per second ($category_feature)": (
            "a model without a reference profile has only numeric default features"
        ),
    },
}


def _regex_escape(value: str) -> str:
    """How Grafana escapes a multi-value variable inside a Prometheus regex matcher."""
    return re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\1", value)


def _prometheus_get(base: str, path: str, **params) -> dict:
    import urllib.parse
    import urllib.request

    query = urllib.parse.urlencode(params, doseq=True)
    with urllib.request.urlopen(f"{base}{path}?{query}", timeout=10) as response:
        document = json.loads(response.read())
    assert document["status"] == "success", document
    return document["data"]


def _label_values(base: str, definition: str, variables: dict[str, str]) -> list[str]:
    """Fill a query variable the way Grafana does: label_values(selector, label)."""
    match = re.fullmatch(r"label_values\((.*), (\w+)\)", definition)
    assert match, definition
    selector = _substitute(match[1], variables)
    return sorted(
        _prometheus_get(base, f"/api/v1/label/{match[2]}/values", **{"match[]": selector})
    )


def _substitute(expr: str, variables: dict[str, str]) -> str:
    expr = expr.replace("$__rate_interval", RATE_INTERVAL)
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace(f"${name}", variables[name])
    assert "$" not in expr, expr
    return expr


@pytest.fixture
def live_runtime(tmp_path):
    """An iris classifier (reference profile with a categorical feature) behind a gateway with
    a shadow, and an MLP regressor without a profile (default feature names X[0]...) behind
    another gateway; both under steady traffic."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from tests.runtime.conftest import _mlp, _save
    from tests.runtime.helpers import iris_rows, put_routes, routes, start_gateway, start_server

    features, labels = load_iris(return_X_y=True)
    features = features.astype("float32")
    iris = _save(
        to_onnx(LogisticRegression(max_iter=500).fit(features, labels), features[:1]),
        tmp_path / "iris",
    )
    profile = {
        "rows": len(features),
        "features": [
            {"name": "sepal length (cm)", "input": "X", "index": 0, "kind": "numeric",
             "edges": [4, 5, 6, 7, 8], "counts": [30, 50, 50, 20]},
            {"name": "petal width [bucket]", "input": "X", "index": 3, "kind": "categorical",
             "categories": {"0.2": 29, "1.3": 13, "1.8": 12}},
        ],
        "prediction": {"kind": "categorical", "categories": {"0": 50, "1": 50, "2": 50}},
    }  # fmt: skip
    (iris / "reference.json").write_text(json.dumps(profile))
    mlp = _save(_mlp(), tmp_path / "mlp")
    processes = []
    try:
        iris_one = start_server(iris, "iris", "iris:1", endpoint="iris")
        processes.append(iris_one)
        iris_two = start_server(iris, "iris", "iris:2", "--variant", "shadow", endpoint="iris")
        processes.append(iris_two)
        mlp_one = start_server(mlp, "mlp", "mlp:1", endpoint="mlp")
        processes.append(mlp_one)
        iris_gateway = start_gateway(endpoint="iris")
        processes.append(iris_gateway)
        mlp_gateway = start_gateway(endpoint="mlp")
        processes.append(mlp_gateway)
        table = routes(("iris:1", iris_one, 100, "primary"), ("iris:2", iris_two, 100, "shadow"))
        assert put_routes(iris_gateway, table)[0] == 200
        assert put_routes(mlp_gateway, routes(("mlp:1", mlp_one, 100, "primary")))[0] == 200
        rows = iris_rows(8).tolist()
        calls = [
            (iris_gateway.url + "/v2/models/iris/infer",
             {"inputs": [{"name": "X", "datatype": "FP32", "shape": [8, 4], "data": rows}]}),
            (mlp_gateway.url + "/v2/models/mlp/infer",
             {"inputs": [{"name": "X", "datatype": "FP32", "shape": [2, 100],
                          "data": [[0.5] * 100, [-1.0] * 100]}]}),
        ]  # fmt: skip
        yield processes, calls
    finally:
        for process in reversed(processes):
            process.stop()


@pytest.mark.prometheus
@pytest.mark.slow
def test_every_panel_shows_data_for_every_served_model(live_runtime, tmp_path):
    import shutil
    import subprocess
    import threading
    import time

    from tests.conftest import tier_unavailable
    from tests.runtime.helpers import free_port, post_json

    binary = shutil.which("prometheus")
    if binary is None:
        tier_unavailable("prometheus", "Debian's prometheus package is not installed")
    processes, calls = live_runtime
    port = free_port()
    config = {
        "global": {"scrape_interval": f"{SCRAPE_SECONDS}s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "modeldeck",
                "static_configs": [
                    {"targets": [process.url[len("http://") :] for process in processes]}
                ],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    prometheus = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            for url, body in calls:
                post_json(url, body)
            time.sleep(0.02)

    driver = threading.Thread(target=traffic, daemon=True)
    driver.start()
    try:
        deadline = time.monotonic() + 60
        targets: list = []
        while time.monotonic() < deadline:
            try:
                targets = _prometheus_get(base, "/api/v1/targets")["activeTargets"]
                if len(targets) == len(processes) and all(t["health"] == "up" for t in targets):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            states = [(t["scrapeUrl"], t["health"], t["lastError"]) for t in targets]
            raise AssertionError(f"Prometheus never scraped every runtime process: {states}")
        time.sleep(6 * SCRAPE_SECONDS)  # enough samples for every rate window
        dashboard = json.loads(DASHBOARD.read_text())
        definitions = {
            variable["name"]: variable["definition"]
            for variable in dashboard["templating"]["list"]
            if variable["type"] == "query"
        }
        kinds = {"iris": "classifier", "mlp": "regressor"}
        endpoints = _label_values(base, definitions["endpoint"], {})
        assert endpoints == sorted(kinds)
        empty = []
        for endpoint in endpoints:
            selected = {"endpoint": _regex_escape(endpoint)}
            versions = _label_values(base, definitions["version"], selected)
            selected["version"] = "(" + "|".join(_regex_escape(v) for v in versions) + ")"
            numeric = _label_values(base, definitions["feature"], selected)
            categorical = _label_values(base, definitions["category_feature"], selected)
            assert numeric, endpoint
            if endpoint == "mlp":
                assert "X[0]" in numeric and categorical == []
            else:
                assert numeric == ["sepal length (cm)"]
                assert categorical == ["petal width [bucket]"]
            for panel in dashboard["panels"]:
                if panel["title"] in NOT_APPLICABLE[kinds[endpoint]]:
                    continue
                for target in panel.get("targets", []):
                    for component in ("gateway", "server"):
                        for feature in numeric if "$feature" in target["expr"] else [""]:
                            for category in categorical or [""]:
                                variables = {
                                    **selected,
                                    "component": component,
                                    "feature": feature,
                                    "category_feature": category,
                                }
                                expr = _substitute(target["expr"], variables)
                                result = _prometheus_get(base, "/api/v1/query", query=expr)
                                if not result["result"]:
                                    empty.append((endpoint, panel["title"], expr))
        # The shadow panel reads the gateway's comparison counters; only the iris endpoint has a
        # shadow, so the mlp endpoint is allowed to show none there.
        empty = [
            entry
            for entry in empty
            if not (entry[0] == "mlp" and entry[1].startswith("Shadow agreement"))
        ]
        assert empty == []
    finally:
        stop.set()
        driver.join(timeout=10)
        prometheus.terminate()
        prometheus.wait(timeout=20)
