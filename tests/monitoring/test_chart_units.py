"""One time unit per chart: latency in milliseconds; legends sit above the plot, clear of long
axis labels (the drift histograms' bins)."""

from monitoring import charts
from tests.monitoring.test_charts import series


def test_latency_is_charted_in_milliseconds():
    figure = charts.latency_figure(series())
    assert figure["layout"]["yaxis"]["title"]["text"] == "milliseconds"
    p95 = next(trace for trace in figure["data"] if trace["name"] == "iris:1 p95")
    assert p95["y"] == [20.0, 40.0]
    assert p95["hovertemplate"] == "%{y:.1f} ms"
    candidate = next(trace for trace in figure["data"] if trace["name"] == "iris:2 p50")
    assert candidate["y"] == [10.0, None]


def test_legends_sit_above_the_plot():
    feature = {
        "name": "petal_length",
        "kind": "numeric",
        "psi": 0.31,
        "bins": ["(-inf, 1.2]", "(1.2, 3.4]", "(3.4, 5.1]", "(5.1, inf)"],
        "reference": [0.2, 0.3, 0.3, 0.2],
        "live": [0.1, 0.2, 0.3, 0.4],
        "drifting": True,
    }
    for figure in (charts.histogram_overlay_figure(feature), charts.latency_figure(series())):
        legend = figure["layout"]["legend"]
        assert (legend["yanchor"], legend["y"]) == ("bottom", 1.02)
        assert figure["layout"]["margin"]["t"] >= 56
