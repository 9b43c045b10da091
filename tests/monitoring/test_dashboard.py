"""The dashboard shows each endpoint's last hour as sparklines (requests, 5xx, p95 in ms), and
the open alerts, running experiments and recent deploys of the user's teams only."""

from datetime import timedelta

import pytest
from django.utils import timezone

from monitoring import selectors
from monitoring.models import Alert, AlertRule, Experiment
from monitoring.templatetags.sparklines import sparkline
from tests.monitoring.conftest import make_endpoint, make_version, seed_point

pytestmark = pytest.mark.django_db


@pytest.fixture
def live(team):
    version = make_version(team, "iris", 1)
    endpoint = make_endpoint(team, "iris-live", [(version, 100, "primary")])
    return endpoint, version


def test_sparklines_hold_one_value_a_minute_with_p95_in_milliseconds(live):
    endpoint, version = live
    now = timezone.now().replace(second=30, microsecond=0)
    minute = now.replace(second=0)
    # 10 requests in (0.005, 0.01], so the p95 lies in that bucket: 9.75 ms by interpolation.
    seed_point(endpoint, version, minute - timedelta(minutes=2), requests=10, server_errors=1,
               latency_counts=[0, 10, 0, 0, 0, 0, 0, 0, 0])  # fmt: skip
    seed_point(endpoint, version, minute, requests=4, latency_counts=[4, 0, 0, 0, 0, 0, 0, 0, 0])
    lines = selectors.endpoint_sparklines(endpoint_ids=[endpoint.pk], now=now)[endpoint.pk]
    assert len(lines["requests"]) == 60
    assert lines["requests"][-3:] == [10, 0, 4]
    assert lines["errors"][-3:] == [1, 0, 0]
    assert lines["p95_ms"][-3:] == [9.75, None, 4.75]
    assert lines["p95_ms"][:57] == [None] * 57


def test_a_sparkline_is_an_svg_with_a_name_and_gaps():
    svg = str(sparkline([1, None, 3, 2], "Requests per minute"))
    assert svg.startswith('<svg class="sparkline"')
    assert (
        'aria-label="Requests per minute, one value a minute over the last hour: latest 2, ' in svg
    )
    assert svg.count("<polyline") == 2  # split at the empty minute
    assert "sparkline-empty" in str(sparkline([None, 0], "Errors"))


def test_the_dashboard_lists_alerts_experiments_and_deploys_of_the_users_teams(
    client, viewer, live, other_team
):
    endpoint, version = live
    rule = AlertRule.objects.create(endpoint=endpoint, name="slow", metric="latency_p95",
                                    threshold=0.5)  # fmt: skip
    Alert.objects.create(rule=rule, endpoint=endpoint, message="p95 above 500 ms")
    second = make_version(endpoint.team, "iris", 2)
    Experiment.objects.create(endpoint=endpoint, name="bigger-trees", control=version,
                              treatment=second, metric="accuracy", minimum_effect=0.02,
                              status="running", started_at=timezone.now())  # fmt: skip
    other_version = make_version(other_team, "secret-model", 1)
    hidden = make_endpoint(other_team, "hidden-endpoint", [(other_version, 100, "primary")])
    hidden_rule = AlertRule.objects.create(endpoint=hidden, name="x", metric="error_rate",
                                           threshold=0.1)  # fmt: skip
    Alert.objects.create(rule=hidden_rule, endpoint=hidden, message="hidden alert")
    seed_point(endpoint, version, timezone.now().replace(second=0, microsecond=0), requests=3)

    client.force_login(viewer)
    page = client.get("/").content.decode()
    assert "p95 above 500 ms" in page
    assert "bigger-trees" in page
    assert "iris-live</a> release 1: deploy" in page
    assert (
        'aria-label="Requests per minute, one value a minute over the last hour: latest 3' in page
    )
    assert "hidden alert" not in page and "hidden-endpoint" not in page
