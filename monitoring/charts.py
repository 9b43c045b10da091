"""Plotly figures as plain dicts: data in, figure out, no ORM and no I/O.

Templates embed each figure with `json_script`; static/js/charts.js draws it with Plotly.react,
and redraws it in place when a polled partial brings new data (`uirevision` keeps the zoom).
"""

from __future__ import annotations

PALETTE = ("#2456d6", "#d97706", "#1f8a4c", "#9333ea", "#c53030", "#0891b2", "#4b5563", "#db2777")
REFERENCE_COLOR = "#9aa5b4"


def version_color(index: int) -> str:
    """The colour of the n-th version, the same on every chart of a page."""
    return PALETTE[index % len(PALETTE)]


def _layout(title: str, y_title: str, **extra) -> dict:
    layout = {
        "title": {"text": title, "font": {"size": 14}, "x": 0.01},
        "height": 280,
        "margin": {"l": 56, "r": 16, "t": 56, "b": 36},
        "hovermode": "x unified",
        # Above the plot, right-aligned: below it, the legend ran into long x-axis labels.
        "legend": {"orientation": "h", "x": 1, "xanchor": "right", "y": 1.02, "yanchor": "bottom"},
        "paper_bgcolor": "#ffffff",
        "plot_bgcolor": "#ffffff",
        "font": {"family": "system-ui, sans-serif", "size": 12, "color": "#1c2430"},
        "xaxis": {"type": "date", "gridcolor": "#eef1f5"},
        "yaxis": {"title": {"text": y_title}, "gridcolor": "#eef1f5", "rangemode": "tozero"},
        # Same value on every redraw: Plotly.react keeps the user's zoom and hidden traces.
        "uirevision": "keep",
    }
    layout.update(extra)
    return layout


def _empty(title: str, message: str) -> dict:
    layout = _layout(title, "")
    layout["xaxis"] = {"visible": False}
    layout["yaxis"] = {"visible": False}
    layout["annotations"] = [
        {
            "text": message,
            "showarrow": False,
            "xref": "paper",
            "yref": "paper",
            "x": 0.5,
            "y": 0.5,
            "font": {"color": "#6a7483"},
        }
    ]
    return {"data": [], "layout": layout}


def _line(series: dict, y: list, name: str, color: str, **extra) -> dict:
    """A line over the series' regular time grid, given as start and step (x0/dx) rather than
    one timestamp per point, which keeps a 24 h page a third of the size."""
    trace = {
        "type": "scatter",
        # Markers too: a minute with traffic between two without is a lone point, which a
        # line alone does not draw.
        "mode": "lines+markers",
        "marker": {"size": 4, "color": color},
        "x0": series["timestamps"][0] if series["timestamps"] else None,
        "dx": series["step_seconds"] * 1000,
        "y": y,
        "name": name,
        "line": {"color": color, "width": 2},
        "connectgaps": False,
    }
    trace.update(extra)
    return trace


def throughput_figure(series: dict) -> dict:
    """Requests per second of every version."""
    title = "Throughput"
    if not series["versions"]:
        return _empty(title, "No traffic in this range yet.")
    data = [
        _line(series, version["requests_per_second"], version["version"], version_color(index))
        for index, version in enumerate(series["versions"])
    ]
    return {"data": data, "layout": _layout(title, "requests / s")}


def error_rate_figure(series: dict) -> dict:
    """Share of 5xx answers (solid) and 4xx answers (dotted) of every version."""
    title = "Error rate"
    if not series["versions"]:
        return _empty(title, "No traffic in this range yet.")
    data = []
    for index, version in enumerate(series["versions"]):
        color = version_color(index)
        data.append(_line(series, version["error_rate"], f"{version['version']} 5xx", color))
        data.append(
            _line(
                series,
                version["client_error_rate"],
                f"{version['version']} 4xx",
                color,
                line={"color": color, "width": 1, "dash": "dot"},
            )
        )
    layout = _layout(title, "share of requests")
    layout["yaxis"]["tickformat"] = ".1%"
    return {"data": data, "layout": layout}


def latency_figure(series: dict) -> dict:
    """p50 (dotted), p95 (solid) and p99 (dashed) latency of every version."""
    title = "Latency"
    if not series["versions"]:
        return _empty(title, "No traffic in this range yet.")
    data = []
    styles = (
        ("latency_p50", "p50", "dot", 1),
        ("latency_p95", "p95", "solid", 2),
        ("latency_p99", "p99", "dash", 1),
    )
    for index, version in enumerate(series["versions"]):
        color = version_color(index)
        for key, label, dash, width in styles:
            # Milliseconds, like every other latency the pages show.
            milliseconds = [
                None if value is None else round(value * 1000, 3) for value in version[key]
            ]
            data.append(
                _line(
                    series,
                    milliseconds,
                    f"{version['version']} {label}",
                    color,
                    line={"color": color, "width": width, "dash": dash},
                    hovertemplate="%{y:.1f} ms",
                )
            )
    return {"data": data, "layout": _layout(title, "milliseconds")}


def traffic_share_figure(series: dict) -> dict:
    """Share of live traffic each version received (stacked; shadows are not live traffic)."""
    title = "Traffic share"
    live = [
        (index, version)
        for index, version in enumerate(series["versions"])
        if version["variant"] != "shadow"
    ]
    if not live:
        return _empty(title, "No traffic in this range yet.")
    data = [
        _line(
            series,
            version["traffic_share"],
            version["version"],
            version_color(index),
            stackgroup="share",
            fillcolor=version_color(index),
        )
        for index, version in live
    ]
    layout = _layout(title, "share of live requests")
    layout["yaxis"].update({"tickformat": ".0%", "range": [0, 1]})
    return {"data": data, "layout": layout}


def drift_heatmap_figure(history: dict) -> dict:
    """Feature × time heatmap of drift scores (effect size ÷ threshold; 1 = drifting)."""
    title = f"Drift over time — {history.get('version', '')}".rstrip(" —")
    if not history["timestamps"] or not history["features"]:
        return _empty(title, "No drift reports yet.")
    trace = {
        "type": "heatmap",
        "x": history["timestamps"],
        "y": history["features"],
        "z": history["z"],
        "zmin": 0,
        "zmax": 2,
        "colorscale": [[0, "#e6f6ec"], [0.49, "#fff5e0"], [0.5, "#f6c26b"], [1, "#c53030"]],
        "colorbar": {"title": {"text": "× threshold"}, "thickness": 12},
        "hovertemplate": "%{y}<br>%{x}<br>%{z:.2f} × threshold<extra></extra>",
    }
    layout = _layout(title, "")
    layout["height"] = max(220, 60 + 22 * len(history["features"]))
    layout["yaxis"] = {"automargin": True, "type": "category"}
    layout["hovermode"] = "closest"
    return {"data": [trace], "layout": layout}


def histogram_overlay_figure(feature: dict) -> dict:
    """Reference vs live distribution of one feature, as grouped bars of proportions."""
    name = feature["name"]
    value = feature["psi"] if feature["kind"] == "numeric" else feature["js_distance"]
    label = "PSI" if feature["kind"] == "numeric" else "JS"
    statistic = f"{label} {value:.3f}" if value is not None else "no live data"
    title = f"{name} — {statistic}" + (" — drifting" if feature.get("drifting") else "")
    data = [
        {
            "type": "bar",
            "x": feature["bins"],
            "y": feature["reference"],
            "name": "reference",
            "marker": {"color": REFERENCE_COLOR},
        },
        {
            "type": "bar",
            "x": feature["bins"],
            "y": feature["live"],
            "name": "live",
            "marker": {"color": PALETTE[4] if feature.get("drifting") else PALETTE[0]},
        },
    ]
    layout = _layout(title, "share of rows", barmode="group", hovermode="x")
    layout["xaxis"] = {"type": "category", "automargin": True}
    layout["yaxis"]["tickformat"] = ".0%"
    layout["height"] = 240
    return {"data": data, "layout": layout}


def monitoring_figures(series: dict) -> dict[str, dict]:
    """Every chart of the endpoint monitoring page, by element name."""
    return {
        "throughput": throughput_figure(series),
        "error-rate": error_rate_figure(series),
        "latency": latency_figure(series),
        "traffic-share": traffic_share_figure(series),
    }


def experiment_figure(snapshots: list[dict], metric_label: str) -> dict:
    """Cumulative metric per arm over the experiment's looks, each with a descriptive 95 % band
    (mean ± 1.96 standard errors; the verdict uses `experiment_difference_figure`'s interval).
    `snapshots` = [{at, control: {count, mean, variance}, treatment: {...}}], oldest first."""
    title = f"Cumulative {metric_label} per arm"
    if not snapshots:
        return _empty(title, "No looks yet: the first evaluation runs within a minute.")
    data = []
    for index, arm in enumerate(("control", "treatment")):
        color = version_color(index)
        times = [snapshot["at"] for snapshot in snapshots]
        means, lower, upper = [], [], []
        for snapshot in snapshots:
            count, mean, variance = (snapshot[arm][key] for key in ("count", "mean", "variance"))
            error = 1.96 * (variance / count) ** 0.5 if count else None
            means.append(mean if count else None)
            lower.append(mean - error if error is not None else None)
            upper.append(mean + error if error is not None else None)
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "x": times,
                "y": upper,
                "name": f"{arm} band",
                "line": {"width": 0, "color": color},
                "showlegend": False,
                "hoverinfo": "skip",
            }
        )
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "x": times,
                "y": lower,
                "name": f"{arm} band",
                "line": {"width": 0, "color": color},
                "fill": "tonexty",
                "opacity": 0.2,
                "fillcolor": color + "33",
                "showlegend": False,
                "hoverinfo": "skip",
            }
        )
        data.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "x": times,
                "y": means,
                "name": arm,
                "line": {"color": color, "width": 2},
            }
        )
    layout = _layout(title, metric_label)
    layout["yaxis"]["rangemode"] = "normal"
    return {"data": data, "layout": layout}


def experiment_difference_figure(snapshots: list[dict], metric_label: str) -> dict:
    """Treatment − control at every look with the always-valid interval the verdict uses (as
    recomputed at that look), and the zero line it must leave for a verdict. `snapshots` as for
    `experiment_figure`, each with `lower` and `upper` (None before the minimum sample)."""
    title = "Treatment − control with its always-valid interval"
    looks = [s for s in snapshots if s.get("lower") is not None and s.get("upper") is not None]
    if not looks:
        return _empty(title, "The interval appears once both arms have enough outcomes.")
    times = [look["at"] for look in looks]
    differences = [look["treatment"]["mean"] - look["control"]["mean"] for look in looks]
    color = version_color(1)
    data = [
        {
            "type": "scatter",
            "mode": "lines",
            "x": times,
            "y": [look["upper"] for look in looks],
            "name": "upper bound",
            "line": {"width": 0, "color": color},
            "showlegend": False,
        },
        {
            "type": "scatter",
            "mode": "lines",
            "x": times,
            "y": [look["lower"] for look in looks],
            "name": "always-valid interval",
            "line": {"width": 0, "color": color},
            "fill": "tonexty",
            "fillcolor": color + "33",
        },
        {
            "type": "scatter",
            "mode": "lines+markers",
            "x": times,
            "y": differences,
            "name": "difference",
            "line": {"color": color, "width": 2},
        },
        {
            "type": "scatter",
            "mode": "lines",
            "x": [times[0], times[-1]],
            "y": [0, 0],
            "name": "no difference",
            "line": {"color": "#6a7483", "width": 1, "dash": "dot"},
        },
    ]
    layout = _layout(title, f"Δ {metric_label}")
    layout["yaxis"]["rangemode"] = "normal"
    return {"data": data, "layout": layout}
