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
