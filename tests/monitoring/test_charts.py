"""Chart functions are pure: plain data in, a JSON-ready Plotly figure out."""

import json

import pytest

from monitoring import charts


def series(variant_two: str = "candidate") -> dict:
    return {
        "timestamps": ["2026-03-10T11:58:00Z", "2026-03-10T11:59:00Z"],
        "step_seconds": 60,
        "versions": [
            {
                "version": "iris:1",
                "variant": "primary",
                "requests_per_second": [1.0, 2.0],
                "error_rate": [0.0, 0.1],
                "client_error_rate": [None, 0.0],
                "latency_p50": [0.01, 0.02],
                "latency_p95": [0.02, 0.04],
                "latency_p99": [0.03, 0.05],
                "traffic_share": [0.9, 0.8],
            },
            {
                "version": "iris:2",
                "variant": variant_two,
                "requests_per_second": [0.1, 0.5],
                "error_rate": [0.0, 0.0],
                "client_error_rate": [0.0, 0.0],
                "latency_p50": [0.01, None],
                "latency_p95": [0.02, None],
                "latency_p99": [0.03, None],
                "traffic_share": [0.1, 0.2],
            },
        ],
    }


def test_monitoring_figures_have_one_trace_family_per_version_in_stable_colours():
    figures = charts.monitoring_figures(series())
    assert set(figures) == {"throughput", "error-rate", "latency", "traffic-share"}
    throughput = figures["throughput"]["data"]
    assert [trace["name"] for trace in throughput] == ["iris:1", "iris:2"]
    assert throughput[1]["y"] == [0.1, 0.5]
    # The time axis is the regular grid: start and step (ms), not one timestamp per point.
    assert (throughput[1]["x0"], throughput[1]["dx"]) == ("2026-03-10T11:58:00Z", 60_000)
    colours = {trace["line"]["color"] for trace in figures["latency"]["data"][:3]}
    assert colours == {charts.version_color(0)}
    assert len(figures["latency"]["data"]) == 6
    assert figures["traffic-share"]["data"][0]["stackgroup"] == "share"
    for figure in figures.values():
        assert figure["layout"]["uirevision"] == "keep"
        json.dumps(figure)  # JSON-ready: json_script can embed it


def test_shadows_are_left_out_of_the_traffic_share():
    figure = charts.traffic_share_figure(series(variant_two="shadow"))
    assert [trace["name"] for trace in figure["data"]] == ["iris:1"]


def test_empty_series_give_an_explanatory_empty_chart():
    figure = charts.throughput_figure({"timestamps": [], "step_seconds": 60, "versions": []})
    assert figure["data"] == []
    assert figure["layout"]["annotations"][0]["text"] == "No traffic in this range yet."


def test_drift_heatmap_and_histogram_overlay():
    heatmap = charts.drift_heatmap_figure(
        {
            "version": "iris:1",
            "timestamps": ["t1", "t2"],
            "features": ["amount", "age"],
            "z": [[0.2, 1.4], [0.1, None]],
        }
    )
    trace = heatmap["data"][0]
    assert (trace["type"], trace["y"], trace["z"]) == (
        "heatmap",
        ["amount", "age"],
        [[0.2, 1.4], [0.1, None]],
    )
    overlay = charts.histogram_overlay_figure(
        {
            "name": "amount",
            "kind": "numeric",
            "psi": 0.31,
            "js_distance": None,
            "drifting": True,
            "bins": ["≤ 1", "(1, 2]", "> 2"],
            "reference": [0.3, 0.4, 0.3],
            "live": [0.1, 0.4, 0.5],
        }
    )
    assert [bar["name"] for bar in overlay["data"]] == ["reference", "live"]
    assert overlay["layout"]["barmode"] == "group"
    assert "PSI 0.310" in overlay["layout"]["title"]["text"]


def test_a_lone_minute_of_latency_is_drawn_as_a_marker():
    # iris:2 has latency only in the first minute: a line alone would draw nothing for it.
    figure = charts.latency_figure(series())
    lone = [trace for trace in figure["data"] if trace["y"] and trace["y"][1] is None]
    assert lone
    assert all("markers" in trace["mode"] for trace in lone)


def test_the_difference_chart_draws_the_verdicts_interval_around_the_estimate():
    from monitoring.charts import experiment_difference_figure

    arm = {"count": 500, "variance": 0.25}
    snapshots = [
        {"at": "t0", "control": {**arm, "mean": 0.5}, "treatment": {**arm, "mean": 0.5},
         "lower": None, "upper": None},
        {"at": "t1", "control": {**arm, "mean": 0.50}, "treatment": {**arm, "mean": 0.56},
         "lower": -0.01, "upper": 0.13},
        {"at": "t2", "control": {**arm, "mean": 0.50}, "treatment": {**arm, "mean": 0.58},
         "lower": 0.02, "upper": 0.14},
    ]  # fmt: skip
    figure = experiment_difference_figure(snapshots, "accuracy")
    upper, lower, difference, zero = figure["data"]
    assert upper["y"] == [0.13, 0.14] and lower["y"] == [-0.01, 0.02]
    assert difference["x"] == ["t1", "t2"]
    assert difference["y"] == pytest.approx([0.06, 0.08])
    assert all(
        lo < d < up for lo, d, up in zip(lower["y"], difference["y"], upper["y"], strict=True)
    )
    assert zero["y"] == [0, 0]
    empty = experiment_difference_figure(snapshots[:1], "accuracy")
    assert empty["data"] == []
