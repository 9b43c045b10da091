"""Reads for monitoring and the home dashboard, always scoped to the caller's teams."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from django.db import connections
from django.db.models import Max, OuterRef, QuerySet, Subquery, Sum, TextField
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.http import Http404
from django.utils import timezone

from accounts.actor import Actor
from common.errors import ApplicationError
from deployments.models import Endpoint, EndpointStatus, Release
from deployments.selectors import endpoint_cards_for_actor
from deployments.targets.local.driver import prediction_log_url as local_prediction_log_url
from monitoring import charts, histograms
from monitoring.models import (
    Alert,
    AlertRule,
    AlertStatus,
    Component,
    DriftReport,
    Experiment,
    ExperimentStatus,
    MetricHour,
    MetricPoint,
    PredictionRecord,
)
from registry.models import ModelVersion
from registry.selectors import model_list_for_actor

MAX_POINTS = 2000
QUANTILES = (0.5, 0.95, 0.99)
# Statuses in which new data keeps arriving, so pages poll.
POLLED_STATUSES = {EndpointStatus.LIVE, EndpointStatus.DEGRADED, EndpointStatus.PROGRESSING}
HEALTH_WINDOW = timedelta(minutes=5)


@dataclass(frozen=True)
class RangeSpec:
    """A time range of the metric pages and API: how far back, and from which table."""

    name: str
    span: timedelta
    step: timedelta
    hourly: bool


RANGES = {
    spec.name: spec
    for spec in (
        RangeSpec("15m", timedelta(minutes=15), timedelta(minutes=1), hourly=False),
        RangeSpec("1h", timedelta(hours=1), timedelta(minutes=1), hourly=False),
        RangeSpec("24h", timedelta(hours=24), timedelta(minutes=1), hourly=False),
        RangeSpec("7d", timedelta(days=7), timedelta(hours=1), hourly=True),
        RangeSpec("30d", timedelta(days=30), timedelta(hours=1), hourly=True),
    )
}
DEFAULT_RANGE = "1h"


def parse_range(value: str | None) -> RangeSpec:
    """The range named by a query parameter; ApplicationError (400) for anything else."""
    if value is None or value == "":
        return RANGES[DEFAULT_RANGE]
    spec = RANGES.get(value)
    if spec is None:
        allowed = ", ".join(RANGES)
        raise ApplicationError(
            f"range must be one of {allowed} (got {value[:20]!r}).",
            {"range": [f"Choose one of {allowed}."]},
        )
    return spec


def endpoint_for_actor(*, actor: Actor, name: str) -> Endpoint:
    """One endpoint of the actor's teams; another team's endpoint does not exist (404)."""
    endpoint = (
        Endpoint.objects.filter(team_id__in=actor.team_ids, name=name)
        .select_related("team", "target", "desired_release")
        .first()
    )
    if endpoint is None:
        raise Http404("No such endpoint.")
    return endpoint


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _clean(values: np.ndarray, digits: int = 6) -> list:
    """A numpy series as JSON: rounded, with None where there is no data."""
    rounded = np.round(values.astype(np.float64), digits).tolist()
    return [None if value != value else value for value in rounded]  # NaN != NaN


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(
            denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan
        )


NUMBER_FIELDS = (
    "requests",
    "client_errors",
    "server_errors",
    "latency_sum",
    "shadow_agreed",
    "shadow_disagreed",
)


@dataclass
class _Rows:
    """Rollup rows as columns: numbers as arrays, latency counts and bounds per row."""

    version_ids: list[int]
    variants: list[str]
    times: list[int]
    numbers: list[tuple]
    counts: list
    bounds: list

    def extend(self, other: _Rows) -> None:
        for name in ("version_ids", "variants", "times", "numbers", "counts", "bounds"):
            getattr(self, name).extend(getattr(other, name))


def _read(queryset: QuerySet, time_field: str) -> _Rows:
    """Rollup rows of a queryset, read for the series (see `metric_series`).

    The hot path of the monitoring page and the metrics API (24 h = 1 440 rows per version):
    one cursor; the timestamp and the latency histogram's counts and bounds come as text and are
    decoded in bulk, several times faster than letting the ORM parse every cell on its own.
    """
    # No ORDER BY: rows are summed into buckets, so their order does not matter.
    columns = queryset.order_by().values_list(
        "version_id",
        "variant",
        *NUMBER_FIELDS,
        Cast(time_field, output_field=TextField()),
        KeyTextTransform("counts", "latency"),
        KeyTextTransform("bounds", "latency"),
    )
    sql, params = columns.query.get_compiler(using=columns.db).as_sql()
    with connections[columns.db].cursor() as cursor:
        cursor.execute(sql, params)
        raw = cursor.fetchall()
    if not raw:
        return _Rows([], [], [], [], [], [])
    version_ids, variants, *numbers, times, counts, bounds = zip(*raw, strict=True)
    # "YYYY-MM-DD HH:MM:SS" (SQLite) or "…+00" (PostgreSQL in UTC): the first 19 characters.
    epoch = np.array([text[:19] for text in times], dtype="datetime64[s]").astype(np.int64)
    decoded = json.loads("[" + ",".join(text or "null" for text in counts) + "]")
    return _Rows(
        list(version_ids),
        list(variants),
        epoch.tolist(),
        list(zip(*numbers, strict=True)),
        decoded,
        list(bounds),
    )


def _source_component(endpoint_id: int, start: datetime, hourly: bool) -> str:
    """Gateway series when the endpoint has any in the range (what callers saw), else servers'."""
    if MetricPoint.objects.filter(
        endpoint_id=endpoint_id, component=Component.GATEWAY, minute__gte=start
    ).exists():
        return Component.GATEWAY
    if (
        hourly
        and MetricHour.objects.filter(
            endpoint_id=endpoint_id, component=Component.GATEWAY, hour__gte=start
        ).exists()
    ):
        return Component.GATEWAY
    return Component.SERVER


def _rollup_rows(endpoint_id: int, component: str, start: datetime, hourly: bool) -> _Rows:
    """Rollup rows of one endpoint and component since `start`.

    Hourly ranges read the hourly table up to its last rolled-up hour and the minute table after
    it, so the current hour is never missing.
    """
    minutes = MetricPoint.objects.filter(endpoint_id=endpoint_id, component=component)
    if not hourly:
        return _read(minutes.filter(minute__gte=start), "minute")
    watermark = MetricHour.objects.filter(endpoint_id=endpoint_id).aggregate(last=Max("hour"))[
        "last"
    ]
    minute_start = start
    rows = _Rows([], [], [], [], [], [])
    if watermark is not None:
        hours = MetricHour.objects.filter(
            endpoint_id=endpoint_id, component=component, hour__gte=start, hour__lte=watermark
        )
        rows.extend(_read(hours, "hour"))
        minute_start = max(start, watermark + timedelta(hours=1))
    rows.extend(_read(minutes.filter(minute__gte=minute_start), "minute"))
    return rows


def _version_labels(version_ids) -> dict[int, tuple[str, str, int]]:
    """{version id: ("model:N", model name, number)}."""
    return {
        version.pk: (version.reference, version.model.name, version.number)
        for version in ModelVersion.objects.filter(pk__in=set(version_ids)).select_related("model")
    }


def _release_variants(endpoint: Endpoint) -> dict[int, dict]:
    release = endpoint.desired_release
    variants = release.variants if release is not None and not release.is_stop else []
    return {int(v["version_id"]): v for v in variants or [] if v.get("version_id")}


@dataclass
class _VersionSeries:
    """One version's sums on the shared time grid."""

    numbers: np.ndarray  # (len(NUMBER_FIELDS), buckets)
    variant: str = ""
    bounds: list[float] | None = None
    latency: np.ndarray | None = None  # (buckets, histogram buckets)

    def field(self, name: str) -> np.ndarray:
        return self.numbers[NUMBER_FIELDS.index(name)]


def _accumulate(rows: _Rows, start_ts: int, step: int, count: int) -> dict[int, _VersionSeries]:
    """Sum the rows into time buckets per version (several rows may share a bucket)."""
    if not rows.times:
        return {}
    indexes = (np.asarray(rows.times, dtype=np.int64) - start_ts) // step
    valid = (indexes >= 0) & (indexes < count)
    version_ids = np.asarray(rows.version_ids, dtype=np.int64)
    numbers = np.asarray(rows.numbers, dtype=np.float64).reshape(len(rows.times), -1)
    result = {}
    for version_id in np.unique(version_ids[valid]).tolist():
        selected = np.flatnonzero(valid & (version_ids == version_id))
        where = indexes[selected]
        sums = np.zeros((len(NUMBER_FIELDS), count))
        for column in range(len(NUMBER_FIELDS)):
            sums[column] = np.bincount(where, weights=numbers[selected, column], minlength=count)
        series = _VersionSeries(sums)
        # The role in the newest row that names one.
        for position in selected[np.argsort(np.asarray(rows.times)[selected])][::-1].tolist():
            if rows.variants[position]:
                series.variant = rows.variants[position]
                break
        _accumulate_latency(series, rows, selected, where, count)
        result[version_id] = series
    return result


def _accumulate_latency(
    series: _VersionSeries, rows: _Rows, selected: np.ndarray, where: np.ndarray, count: int
) -> None:
    """Latency counts per bucket; rows whose bounds differ are re-binned onto the first ones."""
    with_counts = [
        (position, bucket)
        for position, bucket in zip(selected.tolist(), where.tolist(), strict=True)
        if rows.counts[position] and rows.bounds[position]
    ]
    if not with_counts:
        return
    reference_text = rows.bounds[with_counts[0][0]]
    series.bounds = json.loads(reference_text)
    series.latency = np.zeros((count, len(series.bounds) + 1))
    same = [(p, b) for p, b in with_counts if rows.bounds[p] == reference_text]
    matrix = np.asarray([rows.counts[p] for p, _ in same], dtype=np.float64)
    np.add.at(series.latency, np.asarray([b for _, b in same]), matrix)
    for position, bucket in with_counts:
        if rows.bounds[position] != reference_text:
            histogram = {
                "bounds": json.loads(rows.bounds[position]),
                "counts": rows.counts[position],
            }
            series.latency[bucket] += histograms.rebin(histogram, series.bounds)


def _timestamps(start_ts: int, step: int, count: int) -> list[str]:
    moments = (np.arange(count, dtype=np.int64) * step + start_ts).astype("datetime64[s]")
    return [f"{text}Z" for text in moments.astype(str).tolist()]


def metric_series(
    *, endpoint: Endpoint, range_name: str | None, now: datetime | None = None
) -> dict:
    """Per-version series of an endpoint over a range: requests/s, error rates, latency
    percentiles (interpolated inside histogram buckets) and traffic share, plus range totals.

    At most MAX_POINTS points per series; 7d and 30d read the hourly rollups.
    """
    spec = parse_range(range_name)
    now = now or timezone.now()
    base_step = int(spec.step.total_seconds())
    factor = max(1, math.ceil(spec.span.total_seconds() / base_step / MAX_POINTS))
    step = base_step * factor
    count = math.ceil(spec.span.total_seconds() / step)
    end_bucket = math.floor(now.timestamp() / step) * step
    start_ts = end_bucket - (count - 1) * step
    start = datetime.fromtimestamp(start_ts, tz=UTC)
    component = _source_component(endpoint.pk, start, spec.hourly)
    rows = _rollup_rows(endpoint.pk, component, start, spec.hourly)
    accumulators = _accumulate(rows, start_ts, step, count)
    configured = _release_variants(endpoint)
    for version_id in configured:
        accumulators.setdefault(version_id, _VersionSeries(np.zeros((len(NUMBER_FIELDS), count))))
    labels = _version_labels(accumulators)
    accumulators = {pk: series for pk, series in accumulators.items() if pk in labels}

    seconds = np.full(count, float(step))
    seconds[-1] = min(float(step), max(1.0, now.timestamp() - end_bucket))
    elapsed = float(seconds.sum())
    for version_id, accumulator in accumulators.items():
        if not accumulator.variant:
            accumulator.variant = configured.get(version_id, {}).get("role", "")
    live_total = sum(
        (a.field("requests") for a in accumulators.values() if a.variant != "shadow"),
        np.zeros(count),
    )
    live_requests = float(live_total.sum())
    inference = _inference_means(endpoint.pk, start, spec.hourly)
    versions = [
        _version_entry(
            labels[version_id][0],
            version_id,
            accumulators[version_id],
            configured.get(version_id, {}),
            live_total,
            live_requests,
            seconds,
            elapsed,
            inference.get(version_id),
        )
        for version_id in sorted(accumulators, key=lambda pk: labels[pk][1:])
    ]
    return {
        "endpoint": endpoint.name,
        "range": spec.name,
        "step_seconds": step,
        "source": str(component),
        "start": _iso(start),
        "end": _iso(now),
        "generated_at": _iso(timezone.now()),
        "timestamps": _timestamps(start_ts, step, count),
        "versions": versions,
    }


def _version_entry(
    reference: str,
    version_id: int,
    data: _VersionSeries,
    configured: dict,
    live_total: np.ndarray,
    live_requests: float,
    seconds: np.ndarray,
    elapsed: float,
    inference_mean: float | None,
) -> dict:
    """One version's series and range totals."""
    count = seconds.size
    requests = data.field("requests")
    errors = data.field("server_errors")
    client_errors = data.field("client_errors")
    if data.latency is not None:
        percentiles = histograms.quantiles(data.bounds, data.latency, QUANTILES)
        overall = histograms.quantiles(data.bounds, data.latency.sum(axis=0)[None, :], QUANTILES)[0]
    else:
        percentiles = np.full((count, len(QUANTILES)), np.nan)
        overall = np.full(len(QUANTILES), np.nan)
    live = data.variant != "shadow"
    share = _ratio(requests, live_total) if live else np.full(count, np.nan)
    total = int(requests.sum())
    agreed, disagreed = data.field("shadow_agreed").sum(), data.field("shadow_disagreed").sum()

    def per_request(value: float):
        return _none_or_round(value / total if total else None)

    return {
        "version": reference,
        "version_id": version_id,
        "variant": data.variant,
        "weight": configured.get("weight"),
        "requests": requests.astype(int).tolist(),
        "requests_per_second": _clean(requests / seconds, 4),
        "errors": errors.astype(int).tolist(),
        "client_errors": client_errors.astype(int).tolist(),
        "error_rate": _clean(_ratio(errors, requests)),
        "client_error_rate": _clean(_ratio(client_errors, requests)),
        "latency_p50": _clean(percentiles[:, 0]),
        "latency_p95": _clean(percentiles[:, 1]),
        "latency_p99": _clean(percentiles[:, 2]),
        "traffic_share": _clean(share, 4),
        "totals": {
            "requests": total,
            "requests_per_second": round(total / elapsed, 4),
            "errors": int(errors.sum()),
            "client_errors": int(client_errors.sum()),
            "error_rate": per_request(errors.sum()),
            "client_error_rate": per_request(client_errors.sum()),
            "latency_mean": per_request(data.field("latency_sum").sum()),
            "latency_p50": _none_or_round(overall[0]),
            "latency_p95": _none_or_round(overall[1]),
            "latency_p99": _none_or_round(overall[2]),
            "inference_mean": inference_mean,
            "traffic_share": _none_or_round(
                total / live_requests if live_requests and live else None
            ),
            "shadow_agreement": _none_or_round(
                agreed / (agreed + disagreed) if agreed + disagreed else None
            ),
        },
    }


def _none_or_round(value, digits: int = 6):
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else round(value, digits)


def _inference_means(endpoint_id: int, start: datetime, hourly: bool) -> dict[int, float | None]:
    """Mean onnxruntime time per version (from the version servers) over the range."""
    tables = [(MetricPoint, "minute")] + ([(MetricHour, "hour")] if hourly else [])
    sums: dict[int, list[float]] = {}
    watermark = None
    if hourly:
        watermark = MetricHour.objects.filter(endpoint_id=endpoint_id).aggregate(last=Max("hour"))[
            "last"
        ]
    for model, field in tables:
        rows = model.objects.filter(endpoint_id=endpoint_id, component=Component.SERVER)
        if model is MetricHour:
            rows = rows.filter(hour__gte=start)
        elif watermark is not None:
            rows = rows.filter(minute__gte=max(start, watermark + timedelta(hours=1)))
        else:
            rows = rows.filter(**{f"{field}__gte": start})
        for row in rows.values("version_id").annotate(
            seconds=Sum("inference_sum"), calls=Sum("successes")
        ):
            total = sums.setdefault(row["version_id"], [0.0, 0])
            total[0] += row["seconds"] or 0.0
            total[1] += row["calls"] or 0
    return {pk: round(s / n, 6) if n else None for pk, (s, n) in sums.items()}


def endpoint_health(*, endpoint_ids: list[int], now: datetime | None = None) -> dict[int, dict]:
    """Requests/s, 5xx rate and p95 latency of each endpoint over the last five minutes."""
    now = now or timezone.now()
    start = now.replace(second=0, microsecond=0) - HEALTH_WINDOW + timedelta(minutes=1)
    elapsed = max(1.0, (now - start).total_seconds())
    rows = MetricPoint.objects.filter(endpoint_id__in=endpoint_ids, minute__gte=start).values(
        "endpoint_id", "component", "requests", "server_errors", "latency"
    )
    by_endpoint: dict[int, dict[str, list[dict]]] = {}
    for row in rows:
        by_endpoint.setdefault(row["endpoint_id"], {}).setdefault(row["component"], []).append(row)
    health = {}
    for endpoint_id, components in by_endpoint.items():
        chosen = components.get(Component.GATEWAY) or components.get(Component.SERVER, [])
        requests = sum(row["requests"] for row in chosen)
        errors = sum(row["server_errors"] for row in chosen)
        latency: dict = {}
        for row in chosen:
            latency = histograms.merge(latency, row["latency"])
        health[endpoint_id] = {
            "requests": requests,
            "requests_per_second": round(requests / elapsed, 3),
            "error_rate": round(errors / requests, 4) if requests else None,
            "latency_p95": histograms.quantile(latency, 0.95),
        }
    return health


def _card_name(card) -> str | None:
    return card.get("name") if isinstance(card, dict) else getattr(card, "name", None)


def dashboard_for_actor(*, actor: Actor) -> dict:
    """What the home page shows: endpoint health cards, recent models, first steps when empty."""
    models = model_list_for_actor(actor=actor)
    cards = list(endpoint_cards_for_actor(actor=actor))
    names = [name for name in map(_card_name, cards) if name]
    ids = dict(
        Endpoint.objects.filter(team_id__in=actor.team_ids, name__in=names).values_list(
            "name", "pk"
        )
    )
    health = endpoint_health(endpoint_ids=list(ids.values())) if ids else {}
    enriched = []
    for card in cards:
        endpoint_id = ids.get(_card_name(card))
        metrics = health.get(endpoint_id) if endpoint_id is not None else None
        if isinstance(card, dict):
            card = {**card, "metrics": metrics, "has_monitoring": endpoint_id is not None}
        enriched.append(card)
    sparklines = endpoint_sparklines(endpoint_ids=list(ids.values())) if ids else {}
    for card in enriched:
        if isinstance(card, dict):
            card["sparklines"] = sparklines.get(ids.get(_card_name(card)))
    return {
        "has_team": bool(actor.team_ids),
        "model_count": models.count(),
        "recent_models": models.order_by("-updated_at")[:5],
        "endpoint_cards": enriched,
        **dashboard_activity_for_actor(actor=actor),
    }


def latest_drift_reports(*, endpoint: Endpoint) -> list[DriftReport]:
    """The newest drift report of every version of the endpoint."""
    newest = (
        DriftReport.objects.filter(endpoint=endpoint, version_id=OuterRef("version_id"))
        .order_by("-created_at", "-id")
        .values("pk")[:1]
    )
    reports = DriftReport.objects.filter(endpoint=endpoint, pk=Subquery(newest)).select_related(
        "version__model"
    )
    return sorted(reports, key=lambda report: (report.version.model.name, report.version.number))


def drift_history(
    *, endpoint: Endpoint, version: ModelVersion, since: datetime, limit: int = 500
) -> dict:
    """Drift scores of one version over time, as a feature × time matrix for a heatmap."""
    reports = list(
        DriftReport.objects.filter(endpoint=endpoint, version=version, created_at__gte=since)
        .order_by("-created_at")
        .values("created_at", "scores")[:limit]
    )
    reports.reverse()
    features: list[str] = []
    for report in reports:
        features.extend(name for name in report["scores"] if name not in features)
    z = [[report["scores"].get(name) for report in reports] for name in features]
    return {
        "version": version.reference,
        "timestamps": [_iso(report["created_at"]) for report in reports],
        "features": features,
        "z": z,
    }


def drift_page(*, endpoint: Endpoint, now: datetime | None = None) -> dict:
    """Latest report per version with its heatmap and the overlays of its most drifted features."""
    now = now or timezone.now()
    sections = []
    for report in latest_drift_reports(endpoint=endpoint):
        ranked = sorted(
            report.features,
            key=lambda entry: (entry["score"] or 0) / (entry["threshold"] or 1),
            reverse=True,
        )
        overlays = [charts.histogram_overlay_figure(entry) for entry in ranked[:6]]
        if report.prediction:
            overlays.append(charts.histogram_overlay_figure(report.prediction))
        history = drift_history(
            endpoint=endpoint, version=report.version, since=now - timedelta(days=7)
        )
        sections.append(
            {
                "report": report,
                "features": ranked,
                "heatmap": {
                    "id": f"drift-{report.pk}-heatmap",
                    "figure": charts.drift_heatmap_figure(history),
                },
                "overlays": [
                    {"id": f"drift-{report.pk}-overlay-{index}", "figure": figure}
                    for index, figure in enumerate(overlays)
                ],
            }
        )
    return {"sections": sections}


def drift_summary(*, endpoint: Endpoint) -> dict:
    """The API's view of the latest drift report of every version."""
    return {
        "endpoint": endpoint.name,
        "versions": [
            {
                "version": report.version.reference,
                "version_id": report.version_id,
                "created_at": _iso(report.created_at),
                "window_start": _iso(report.window_start),
                "window_end": _iso(report.window_end),
                "rows": report.rows,
                "verdict": report.verdict,
                "drifting_share": report.drifting_share,
                "thresholds": report.thresholds,
                "features": report.features,
                "prediction": report.prediction,
            }
            for report in latest_drift_reports(endpoint=endpoint)
        ],
    }


def alert_rules_for_endpoint(*, endpoint: Endpoint) -> QuerySet[AlertRule]:
    """Rules of one endpoint (the caller's access was checked with the endpoint)."""
    return AlertRule.objects.filter(endpoint=endpoint).order_by("name", "pk")


def alerts_for_actor(*, actor: Actor, status: str = "") -> QuerySet[Alert]:
    """Alerts on the actor's teams' endpoints, open first, newest first."""
    alerts = Alert.objects.filter(endpoint__team_id__in=actor.team_ids).select_related(
        "rule", "endpoint"
    )
    if status in AlertStatus.values:
        alerts = alerts.filter(status=status)
    return alerts.order_by("-status", "-opened_at", "-id")


def alerts_for_endpoint(*, endpoint: Endpoint, limit: int = 50) -> list[Alert]:
    """Recent alerts of one endpoint, open first."""
    return list(
        Alert.objects.filter(endpoint=endpoint)
        .select_related("rule")
        .order_by("-status", "-opened_at", "-id")[:limit]
    )


# firsthour: whether the gateway's prediction log reaches the dashboard.
PREDICTION_LOG_GRACE = timedelta(minutes=2)
PREDICTION_LOG_WINDOW = timedelta(minutes=30)


def prediction_log_delivery(*, endpoint: Endpoint, now: datetime | None = None) -> dict | None:
    """Whether the prediction log of the requests the gateway served reached the dashboard.

    The gateway ships its log in the background and keeps retrying, so nothing fails where a
    user looks when it cannot deliver (a dashboard moved to another port, a wrong
    `prediction_log_url`). The scraped gateway counters say when it last answered a request; a
    log record received since then (allowing it PREDICTION_LOG_GRACE to arrive) shows delivery
    works. None when the gateway answered nothing recently (nothing to judge)."""
    now = now or timezone.now()
    last_served = MetricPoint.objects.filter(
        endpoint=endpoint,
        component=Component.GATEWAY,
        requests__gt=0,
        minute__gte=now - PREDICTION_LOG_WINDOW,
        minute__lte=now - PREDICTION_LOG_GRACE,
    ).aggregate(last=Max("minute"))["last"]
    if last_served is None:
        return None
    last_received = PredictionRecord.objects.filter(endpoint=endpoint).aggregate(
        last=Max("received_at")
    )["last"]
    return {
        "delivered": last_received is not None and last_received >= last_served,
        "last_served": last_served,
        "last_received": last_received,
        "url": _prediction_log_url(endpoint),
    }


def _prediction_log_url(endpoint: Endpoint) -> str:
    """Where the endpoint's gateway posts its log, as far as the dashboard knows."""
    if endpoint.target.kind == "local":
        return local_prediction_log_url(endpoint)
    base = str((endpoint.target.config or {}).get("prediction_log_url") or "").rstrip("/")
    return f"{base}/api/v1/endpoints/{endpoint.name}/predictions/" if base else ""


# firsthour: the dashboard's sparklines and activity lists.
SPARKLINE_MINUTES = 60


def endpoint_sparklines(
    *, endpoint_ids: list[int], now: datetime | None = None
) -> dict[int, dict[str, list]]:
    """Per endpoint, one value a minute over the last hour: requests, 5xx errors and p95
    latency in milliseconds (None where a minute had no traffic)."""
    now = (now or timezone.now()).replace(second=0, microsecond=0)
    start = now - timedelta(minutes=SPARKLINE_MINUTES - 1)
    rows = MetricPoint.objects.filter(endpoint_id__in=endpoint_ids, minute__gte=start).values(
        "endpoint_id", "component", "minute", "requests", "server_errors", "latency"
    )
    grouped: dict[int, dict[str, dict[int, list[dict]]]] = {}
    for row in rows:
        index = int((row["minute"] - start).total_seconds() // 60)
        if 0 <= index < SPARKLINE_MINUTES:
            by_component = grouped.setdefault(row["endpoint_id"], {})
            by_component.setdefault(row["component"], {}).setdefault(index, []).append(row)
    lines = {}
    for endpoint_id, components in grouped.items():
        # The gateway sees every request once; without one, the version servers do.
        chosen = components.get(Component.GATEWAY) or components.get(Component.SERVER, {})
        requests, errors, p95 = [], [], []
        for index in range(SPARKLINE_MINUTES):
            minute = chosen.get(index, [])
            requests.append(sum(row["requests"] for row in minute))
            errors.append(sum(row["server_errors"] for row in minute))
            latency: dict = {}
            for row in minute:
                latency = histograms.merge(latency, row["latency"])
            value = histograms.quantile(latency, 0.95)
            p95.append(round(value * 1000, 3) if value is not None else None)
        lines[endpoint_id] = {"requests": requests, "errors": errors, "p95_ms": p95}
    return lines


def dashboard_activity_for_actor(*, actor: Actor, limit: int = 8) -> dict:
    """Open alerts, running experiments and recent deploys of the actor's teams."""
    return {
        "open_alerts": list(alerts_for_actor(actor=actor, status=AlertStatus.OPEN)[:limit]),
        "running_experiments": list(
            Experiment.objects.filter(
                endpoint__team_id__in=actor.team_ids, status=ExperimentStatus.RUNNING
            )
            .select_related("endpoint")
            .order_by("-started_at", "-id")[:limit]
        ),
        "recent_releases": list(
            Release.objects.filter(endpoint__team_id__in=actor.team_ids)
            .select_related("endpoint")
            .order_by("-created_at", "-id")[:limit]
        ),
    }
