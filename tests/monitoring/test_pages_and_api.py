"""Monitoring pages and API: team scoping (404), roles (403, nothing changed), polling, /metrics."""

import json
import re

import pytest
from django.test import Client
from django.utils import timezone

from events.models import Webhook, WebhookDelivery
from monitoring.models import AlertRule
from tests.factories import UserFactory
from tests.monitoring.conftest import seed_point

pytestmark = pytest.mark.django_db


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def rule(endpoint):
    return AlertRule.objects.create(
        endpoint=endpoint, name="5xx", metric="error_rate", threshold=0.05
    )


@pytest.fixture
def webhook(team):
    return Webhook.objects.create(
        team=team, name="ci", url="https://hooks.example.com/ci", events=["release.live"]
    )


def endpoint_routes(name: str, rule_id: int) -> list[tuple[str, str]]:
    return [
        ("get", f"/endpoints/{name}/monitoring/"),
        ("get", f"/endpoints/{name}/monitoring/?range=30d"),
        ("get", f"/endpoints/{name}/drift/"),
        ("get", f"/endpoints/{name}/alerts/"),
        ("post", f"/endpoints/{name}/alerts/rules/"),
        ("post", f"/endpoints/{name}/alerts/rules/{rule_id}/delete/"),
        ("post", f"/endpoints/{name}/alerts/rules/{rule_id}/toggle/"),
    ]


def webhook_routes(pk: int) -> list[tuple[str, str]]:
    return [("get", f"/webhooks/{pk}/")] + [
        ("post", f"/webhooks/{pk}/{action}/")
        for action in ("delete", "rotate", "ping", "allow-host", "disallow-host")
    ]


def test_members_see_the_monitoring_pages(endpoint, version, viewer, rule, webhook):
    seed_point(
        endpoint,
        version,
        timezone.now().replace(second=0, microsecond=0),
        requests=12,
        latency_counts=[12, 0, 0, 0, 0, 0, 0, 0, 0],
    )
    client = logged_in(viewer)
    page = client.get("/endpoints/fraud/monitoring/?range=1h")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-figure="figure-throughput"' in html
    assert 'id="figure-latency" type="application/json"' in html
    assert "<script>" not in html  # no inline scripts (CSP)
    assert 'hx-trigger="every 5s"' in html
    assert "iris:1" in html and "iris:2" in html
    for url in (
        "/endpoints/fraud/drift/",
        "/endpoints/fraud/alerts/",
        "/alerts/",
        "/webhooks/",
        f"/webhooks/{webhook.pk}/",
        "/",
    ):
        assert client.get(url).status_code == 200, url


def test_the_partial_carries_fresh_figures_and_stops_polling_when_nothing_serves(endpoint, viewer):
    client = logged_in(viewer)
    partial = client.get("/endpoints/fraud/monitoring/?range=15m", HTTP_HX_REQUEST="true")
    html = partial.content.decode()
    assert "<html" not in html and 'hx-trigger="every 5s"' in html
    figure = re.search(
        r'<script id="figure-throughput" type="application/json">(.*?)</script>', html
    )
    assert json.loads(figure.group(1))["layout"]["uirevision"] == "keep"
    endpoint.status = "stopped"
    endpoint.save(update_fields=["status"])
    html = client.get("/endpoints/fraud/monitoring/", HTTP_HX_REQUEST="true").content.decode()
    assert "hx-trigger" not in html


def test_another_teams_objects_are_404_everywhere(endpoint, rule, webhook, outsider, outsider_api):
    client = logged_in(outsider)
    for method, url in endpoint_routes("fraud", rule.pk) + webhook_routes(webhook.pk):
        assert getattr(client, method)(url).status_code == 404, url
    for url in (
        "/api/v1/endpoints/fraud/metrics/",
        "/api/v1/endpoints/fraud/metrics/?range=7d",
        "/api/v1/endpoints/fraud/drift/",
    ):
        assert outsider_api.get(url).status_code == 404, url
    assert AlertRule.objects.filter(pk=rule.pk, is_enabled=True).exists()
    assert Webhook.objects.filter(pk=webhook.pk, secret_salt=webhook.secret_salt).exists()
    assert not WebhookDelivery.objects.exists()


def test_viewers_read_but_cannot_change_rules_or_webhooks(endpoint, rule, webhook, viewer, team):
    client = logged_in(viewer)
    page = client.get("/endpoints/fraud/alerts/").content.decode()
    assert "Add a rule" not in page
    detail = client.get(f"/webhooks/{webhook.pk}/").content.decode()
    assert webhook.secret not in detail
    form = {
        "name": "slow",
        "metric": "latency_p95",
        "comparator": "gt",
        "threshold": "0.5",
        "window_minutes": "5",
        "for_minutes": "0",
    }
    assert client.post("/endpoints/fraud/alerts/rules/", form).status_code == 403
    for method, url in endpoint_routes("fraud", rule.pk)[4:] + webhook_routes(webhook.pk)[1:]:
        assert getattr(client, method)(url).status_code == 403, url
    created = client.post(
        "/webhooks/new/",
        {
            "team": team.pk,
            "name": "x",
            "url": "https://hooks.example.com/x",
            "events": ["alert.opened"],
        },
    )
    assert created.status_code == 403
    assert list(AlertRule.objects.values_list("name", "is_enabled")) == [("5xx", True)]
    assert list(Webhook.objects.values_list("name", "secret_salt", "allowed_host")) == [
        ("ci", webhook.secret_salt, "")
    ]
    assert not WebhookDelivery.objects.exists()


def test_deployers_manage_rules_and_webhooks(endpoint, deployer, team):
    client = logged_in(deployer)
    form = {
        "name": "slow",
        "metric": "latency_p95",
        "comparator": "gt",
        "threshold": "0.5",
        "window_minutes": "5",
        "for_minutes": "1",
    }
    assert client.post("/endpoints/fraud/alerts/rules/", form).status_code == 302
    rule = AlertRule.objects.get(name="slow")
    assert (rule.threshold, rule.for_minutes) == (0.5, 1)
    response = client.post(
        "/webhooks/new/",
        {
            "team": team.pk,
            "name": "chatops",
            "url": "https://hooks.example.com/x",
            "events": ["alert.opened", "release.live"],
        },
    )
    webhook = Webhook.objects.get(name="chatops")
    assert response["Location"] == f"/webhooks/{webhook.pk}/"
    assert webhook.secret in client.get(response["Location"]).content.decode()
    # Only installation admins (staff) may open a webhook to internal hosts.
    assert client.post(f"/webhooks/{webhook.pk}/allow-host/").status_code == 403
    assert client.post(f"/webhooks/{webhook.pk}/ping/").status_code == 302
    assert WebhookDelivery.objects.get().event == "ping"


def test_metrics_api_series_and_errors(endpoint, version, viewer_api):
    seed_point(endpoint, version, timezone.now().replace(second=0, microsecond=0), requests=6)
    response = viewer_api.get("/api/v1/endpoints/fraud/metrics/?range=24h")
    assert response.status_code == 200
    body = response.json()
    assert body["range"] == "24h" and len(body["timestamps"]) == 1440
    primary = body["versions"][0]
    assert primary["version"] == "iris:1" and primary["totals"]["requests"] == 6
    assert all(len(primary[key]) <= 2000 for key in ("requests", "latency_p95", "error_rate"))
    bad = viewer_api.get("/api/v1/endpoints/fraud/metrics/?range=1y")
    assert bad.status_code == 400
    assert bad.json()["error"].startswith("range must be one of 15m, 1h, 24h, 7d, 30d")
    assert viewer_api.get("/api/v1/endpoints/fraud/drift/").json() == {
        "endpoint": "fraud",
        "versions": [],
    }


def test_the_dashboards_own_metrics_need_a_token_or_staff(client, settings, viewer, endpoint):
    settings.METRICS_TOKEN = "prometheus-scrape-token"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert logged_in(viewer).get("/metrics").status_code == 403
    answer = client.get("/metrics", HTTP_AUTHORIZATION="Bearer prometheus-scrape-token")
    assert answer.status_code == 200
    text = answer.content.decode()
    assert 'modeldeck_endpoints{status="live"} 1.0' in text
    assert "modeldeck_open_alerts 0.0" in text
    staff = UserFactory(username="ops", is_staff=True)
    assert logged_in(staff).get("/metrics").status_code == 200
