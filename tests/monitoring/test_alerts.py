"""Alert rules open one alert after `for` minutes, resolve it after as long clear, and notify."""

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied

from accounts.actor import Actor
from common.errors import ApplicationError
from events.models import Webhook, WebhookDelivery
from monitoring import services
from monitoring.models import Alert, AlertRule, DriftReport
from tests.monitoring.conftest import at, seed_point

pytestmark = pytest.mark.django_db

START = at("2026-03-10 12:00:05")


def error_minute(endpoint, version, moment, *, requests=100, errors=0):
    seed_point(endpoint, version, moment.replace(second=0), requests=requests, server_errors=errors)


@pytest.fixture
def rule(endpoint):
    return AlertRule.objects.create(
        endpoint=endpoint,
        name="5xx",
        metric="error_rate",
        comparator="gt",
        threshold=0.05,
        window_minutes=1,
        for_minutes=2,
    )


@pytest.fixture
def hook(team):
    return Webhook.objects.create(
        team=team,
        name="ops",
        url="https://hooks.example.com/ops",
        events=["alert.opened", "alert.resolved"],
    )


def test_an_alert_opens_once_the_condition_held_for_long_enough(rule, endpoint, version, hook):
    for minute in range(4):
        moment = START + timedelta(minutes=minute)
        error_minute(endpoint, version, moment, errors=20)
        alert = services.alert_rule_evaluate(rule=rule, now=moment)
        assert (alert is not None) == (minute >= 2), minute
    alerts = Alert.objects.filter(rule=rule)
    assert alerts.count() == 1
    alert = alerts.get()
    assert alert.status == "open" and alert.opening_value == pytest.approx(0.2)
    assert alert.opened_at == START + timedelta(minutes=2)
    deliveries = WebhookDelivery.objects.filter(webhook=hook)
    assert list(deliveries.values_list("event", flat=True)) == ["alert.opened"]
    assert deliveries.get().payload["endpoint"] == "fraud"


def test_a_short_blip_opens_nothing_and_recovery_resolves_after_the_hold(
    rule, endpoint, version, hook
):
    error_minute(endpoint, version, START, errors=50)
    services.alert_rule_evaluate(rule=rule, now=START)
    error_minute(endpoint, version, START + timedelta(minutes=1), errors=0)
    services.alert_rule_evaluate(rule=rule, now=START + timedelta(minutes=1))
    assert not Alert.objects.exists()

    for minute in range(2, 5):
        error_minute(endpoint, version, START + timedelta(minutes=minute), errors=50)
        services.alert_rule_evaluate(rule=rule, now=START + timedelta(minutes=minute))
    assert Alert.objects.get().status == "open"
    # One good minute is not enough to resolve (no flapping)...
    error_minute(endpoint, version, START + timedelta(minutes=5), errors=0)
    services.alert_rule_evaluate(rule=rule, now=START + timedelta(minutes=5))
    assert Alert.objects.get().status == "open"
    # ...and a relapse keeps the same alert open.
    error_minute(endpoint, version, START + timedelta(minutes=6), errors=90)
    services.alert_rule_evaluate(rule=rule, now=START + timedelta(minutes=6))
    assert Alert.objects.get().peak_value == pytest.approx(0.9)
    for minute in range(7, 10):
        error_minute(endpoint, version, START + timedelta(minutes=minute), errors=0)
        services.alert_rule_evaluate(rule=rule, now=START + timedelta(minutes=minute))
    alert = Alert.objects.get()
    assert alert.status == "resolved" and alert.resolved_at == START + timedelta(minutes=9)
    events = list(WebhookDelivery.objects.order_by("id").values_list("event", flat=True))
    assert events == ["alert.opened", "alert.resolved"]


def test_evaluating_twice_never_opens_a_second_alert(rule, endpoint, version):
    AlertRule.objects.filter(pk=rule.pk).update(for_minutes=0)
    rule.refresh_from_db()
    error_minute(endpoint, version, START, errors=30)
    services.alert_rule_evaluate(rule=rule, now=START)
    services.alert_rule_evaluate(rule=rule, now=START + timedelta(seconds=5))
    services.alerts_evaluate_all(now=START + timedelta(seconds=10))
    assert Alert.objects.filter(status="open").count() == 1


def test_latency_and_drift_rules(endpoint, version):
    seed_point(
        endpoint,
        version,
        START.replace(second=0),
        requests=100,
        latency_counts=[0, 0, 0, 0, 0, 100, 0, 0, 0],
    )  # (0.1, 0.25]
    slow = AlertRule.objects.create(
        endpoint=endpoint, name="slow", metric="latency_p95", threshold=0.2, window_minutes=5
    )
    assert services.rule_value(slow, now=START) == pytest.approx(0.1 + 0.15 * 0.95)
    assert services.alert_rule_evaluate(rule=slow, now=START) is not None

    drifting = AlertRule.objects.create(
        endpoint=endpoint, name="drift", metric="drift", threshold=0.3, window_minutes=5
    )
    assert services.rule_value(drifting, now=START) is None
    DriftReport.objects.create(
        endpoint=endpoint,
        version=version,
        created_at=START,
        window_start=START,
        window_end=START,
        drifting_share=0.5,
        verdict="drift",
    )
    assert services.rule_value(drifting, now=START) == 0.5
    assert services.alert_rule_evaluate(rule=drifting, now=START) is not None


def test_no_traffic_is_not_an_error_rate(rule):
    assert services.rule_value(rule, now=START) is None
    assert services.alert_rule_evaluate(rule=rule, now=START) is None


def test_rules_are_written_by_deployers_only(endpoint, make_actor, viewer, deployer):
    with pytest.raises(PermissionDenied):
        services.alert_rule_create(
            actor=make_actor(viewer),
            endpoint=endpoint,
            name="x",
            metric="error_rate",
            threshold=0.1,
        )
    with pytest.raises(ApplicationError):
        services.alert_rule_create(
            actor=make_actor(deployer),
            endpoint=endpoint,
            name="x",
            metric="error_rate",
            threshold=5,
        )
    assert not AlertRule.objects.exists()
    rule = services.alert_rule_create(
        actor=make_actor(deployer), endpoint=endpoint, name="x", metric="error_rate", threshold=0.1
    )
    assert rule.created_by == deployer
    paused = services.alert_rule_set_enabled(actor=Actor.system("tests"), rule=rule, enabled=False)
    assert paused.is_enabled is False
