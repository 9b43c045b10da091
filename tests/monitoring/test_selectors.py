"""metric_series, the home cards and the hourly rollups, on seeded rows with known answers."""

from datetime import timedelta

import pytest

from common.errors import ApplicationError
from monitoring import selectors, services
from monitoring.models import Component, MetricHour, MetricPoint
from tests.monitoring.conftest import LATENCY_BOUNDS, at, seed_point

pytestmark = pytest.mark.django_db

NOW = at("2026-03-10 12:00:30")


def test_series_per_version_rates_errors_percentiles_and_share(endpoint, version, candidate):
    minute = at("2026-03-10 11:58")
    # 0.005, 0.01, 0.025, ... : 60 requests, 30 at <= 5 ms and 30 in (5, 10] ms.
    seed_point(
        endpoint,
        version,
        minute,
        requests=60,
        server_errors=6,
        client_errors=3,
        latency_counts=[30, 30, 0, 0, 0, 0, 0, 0, 0],
    )
    seed_point(
        endpoint,
        candidate,
        minute,
        requests=20,
        server_errors=0,
        variant="candidate",
        latency_counts=[0, 0, 20, 0, 0, 0, 0, 0, 0],
    )
    series = selectors.metric_series(endpoint=endpoint, range_name="15m", now=NOW)
    assert series["step_seconds"] == 60 and len(series["timestamps"]) == 15
    assert series["timestamps"][-1] == "2026-03-10T12:00:00Z"
    index = series["timestamps"].index("2026-03-10T11:58:00Z")
    primary, canary = series["versions"]
    assert (primary["version"], canary["version"]) == ("iris:1", "iris:2")
    assert primary["requests"][index] == 60
    assert primary["requests_per_second"][index] == 1.0
    assert primary["error_rate"][index] == pytest.approx(0.1)
    assert primary["client_error_rate"][index] == pytest.approx(0.05)
    assert primary["latency_p50"][index] == pytest.approx(0.005)
    assert primary["latency_p95"][index] == pytest.approx(0.005 + 0.005 * (57 - 30) / 30)
    assert canary["latency_p50"][index] == pytest.approx(0.01 + 0.015 * 0.5)
    assert primary["traffic_share"][index] == pytest.approx(0.75)
    assert canary["traffic_share"][index] == pytest.approx(0.25)
    # Minutes without traffic: zero requests, no rates, no percentiles.
    assert primary["requests"][0] == 0 and primary["error_rate"][0] is None
    assert primary["latency_p95"][0] is None and primary["traffic_share"][0] is None
    totals = primary["totals"]
    assert (totals["requests"], totals["errors"], totals["client_errors"]) == (60, 6, 3)
    assert totals["traffic_share"] == pytest.approx(0.75)
    assert (primary["weight"], canary["weight"]) == (90, 10)


def test_series_prefer_the_gateway_and_fall_back_to_the_servers(endpoint, version):
    minute = at("2026-03-10 11:59")
    seed_point(endpoint, version, minute, requests=7, component=Component.SERVER)
    series = selectors.metric_series(endpoint=endpoint, range_name="1h", now=NOW)
    assert series["source"] == "server"
    assert series["versions"][0]["totals"]["requests"] == 7
    seed_point(endpoint, version, minute, requests=9, component=Component.GATEWAY)
    series = selectors.metric_series(endpoint=endpoint, range_name="1h", now=NOW)
    assert series["source"] == "gateway"
    assert series["versions"][0]["totals"]["requests"] == 9


def test_shadow_versions_have_no_traffic_share(team, version, candidate):
    from tests.monitoring.conftest import make_endpoint

    shadowed = make_endpoint(
        team, "shadowed", [(version, 100, "primary"), (candidate, 50, "shadow")]
    )
    minute = at("2026-03-10 11:59")
    seed_point(shadowed, version, minute, requests=10)
    seed_point(shadowed, candidate, minute, requests=5, variant="shadow")
    series = selectors.metric_series(endpoint=shadowed, range_name="15m", now=NOW)
    primary, shadow = series["versions"]
    assert primary["totals"]["traffic_share"] == 1.0
    assert shadow["totals"]["traffic_share"] is None
    assert set(shadow["traffic_share"]) == {None}


@pytest.mark.parametrize(
    ("range_name", "points", "step"),
    [("15m", 15, 60), ("1h", 60, 60), ("24h", 1440, 60), ("7d", 168, 3600), ("30d", 720, 3600)],
)
def test_every_range_stays_within_2000_points(endpoint, range_name, points, step):
    series = selectors.metric_series(endpoint=endpoint, range_name=range_name, now=NOW)
    assert len(series["timestamps"]) == points <= selectors.MAX_POINTS
    assert series["step_seconds"] == step
    assert all(len(v["requests"]) == points for v in series["versions"])


def test_a_bad_range_is_a_readable_application_error():
    with pytest.raises(ApplicationError) as error:
        selectors.parse_range("2w")
    assert "15m, 1h, 24h, 7d, 30d" in error.value.message


def test_long_ranges_read_hourly_rows_plus_the_minutes_after_the_last_rollup(endpoint, version):
    # Three hours of minute rows, rolled up; then minutes of the current hour.
    for hour in (9, 10, 11):
        for minute in range(0, 60, 10):
            seed_point(
                endpoint,
                version,
                at(f"2026-03-10 {hour:02}:{minute:02}"),
                requests=10,
                server_errors=1,
                latency_counts=[5, 5, 0, 0, 0, 0, 0, 0, 0],
            )
    assert services.metrics_rollup_hours(now=NOW) == 3
    assert MetricHour.objects.count() == 3
    assert MetricHour.objects.get(hour=at("2026-03-10 10:00")).requests == 60
    seed_point(endpoint, version, at("2026-03-10 12:00"), requests=4)
    series = selectors.metric_series(endpoint=endpoint, range_name="7d", now=NOW)
    data = series["versions"][0]
    assert data["requests"][-4:] == [60, 60, 60, 4]
    assert data["totals"]["requests"] == 184
    assert data["error_rate"][-2] == pytest.approx(0.1)
    assert data["latency_p50"][-2] == pytest.approx(0.005)


def test_the_hourly_rollup_is_idempotent_and_retention_drops_old_rows(endpoint, version, settings):
    for minute in (at("2026-03-10 10:05"), at("2026-03-10 10:35")):
        seed_point(
            endpoint, version, minute, requests=3, latency_counts=[3, 0, 0, 0, 0, 0, 0, 0, 0]
        )
    services.metrics_rollup_hours(now=NOW)
    services.metrics_rollup_hours(now=NOW)
    hour = MetricHour.objects.get()
    assert (hour.requests, hour.latency["counts"][0]) == (6, 6)

    settings.METRICS_MINUTE_RETENTION_DAYS = 7
    settings.METRICS_HOUR_RETENTION_DAYS = 90
    pruned = services.metrics_prune(now=NOW + timedelta(days=8))
    assert pruned["minutes"] == 2 and not MetricPoint.objects.exists()
    assert MetricHour.objects.count() == 1
    services.metrics_prune(now=NOW + timedelta(days=91))
    assert not MetricHour.objects.exists()


def test_endpoint_health_covers_the_last_five_minutes(endpoint, version):
    seed_point(endpoint, version, at("2026-03-10 11:50"), requests=1000, server_errors=1000)
    seed_point(
        endpoint,
        version,
        at("2026-03-10 11:57"),
        requests=90,
        server_errors=9,
        latency_counts=[0, 0, 90, 0, 0, 0, 0, 0, 0],
    )
    seed_point(
        endpoint,
        version,
        at("2026-03-10 11:59"),
        requests=120,
        server_errors=12,
        latency_counts=[0, 0, 120, 0, 0, 0, 0, 0, 0],
    )
    health = selectors.endpoint_health(endpoint_ids=[endpoint.pk], now=NOW)[endpoint.pk]
    # 11:56:00 to 12:00:30 is 270 s.
    assert health["requests"] == 210
    assert health["requests_per_second"] == pytest.approx(210 / 270, abs=1e-3)
    assert health["error_rate"] == pytest.approx(0.1)
    assert LATENCY_BOUNDS[1] < health["latency_p95"] <= LATENCY_BOUNDS[2]


def test_dashboard_cards_gain_live_metrics(endpoint, version, make_actor, viewer, monkeypatch):
    from django.utils import timezone

    seed_point(endpoint, version, timezone.now().replace(second=0, microsecond=0), requests=30)
    monkeypatch.setattr(
        selectors,
        "endpoint_cards_for_actor",
        lambda actor: [
            {
                "name": "fraud",
                "status": "live",
                "health": "ok",
                "url": "/endpoints/fraud/",
                "summary": "",
            }
        ],
    )
    cards = selectors.dashboard_for_actor(actor=make_actor(viewer))["endpoint_cards"]
    assert cards[0]["metrics"]["requests"] == 30
    assert cards[0]["has_monitoring"] is True


def test_scrape_states_are_forgotten_only_after_the_minute_retention(endpoint, version):
    from monitoring.models import ScrapeState

    old = ScrapeState.objects.create(
        endpoint=endpoint,
        target="a",
        component="server",
        url="x",
        fetched_at=NOW - timedelta(days=8),
        values={"k": 1.0},
    )
    recent = ScrapeState.objects.create(
        endpoint=endpoint,
        target="b",
        component="server",
        url="x",
        fetched_at=NOW - timedelta(days=2),
    )
    never = ScrapeState.objects.create(endpoint=endpoint, target="c", component="server", url="x")
    assert services.metrics_prune(now=NOW)["scrape_states"] == 2
    assert list(ScrapeState.objects.values_list("pk", flat=True)) == [recent.pk]
    assert not ScrapeState.objects.filter(pk__in=[old.pk, never.pk]).exists()
