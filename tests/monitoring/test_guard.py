"""`manage.py guard`: a round scrapes and judges every policy even when one endpoint's scrape
raises, the loop keeps going until SIGTERM, and running it beside beat neither double-counts
requests nor rolls back twice."""

import os
import random
import signal
import threading
import time
from datetime import timedelta

import httpx
import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from deployments.models import Release
from deployments.targets.base import Observation
from monitoring import scraper, services
from monitoring.management.commands import guard
from monitoring.models import Component, EvaluationAction, MetricPoint, ScrapeState
from tests.monitoring import test_guardrails as guardrail_tests
from tests.monitoring.conftest import make_endpoint, make_version
from tests.monitoring.test_exposition import server_text
from tests.monitoring.test_scraper import server_observation
from tests.registry.test_concurrency import run_together

canary = guardrail_tests.canary
seed, set_policy = guardrail_tests.seed, guardrail_tests.set_policy

# A round closes stale connections, as a long-lived process must: only outside a test transaction.
pytestmark = pytest.mark.django_db(transaction=True)


def breaking_scrape(broken: str, calls: list[str], real=scraper.scrape_endpoint):
    """scrape_endpoint, except that it raises for the endpoint named `broken`."""

    def scrape(endpoint, **kwargs):
        calls.append(endpoint.name)
        if endpoint.name == broken:
            raise RuntimeError("the driver blew up")
        return real(endpoint, observation=Observation(), **kwargs)

    return scrape


def test_a_round_scrapes_and_judges_past_an_endpoint_whose_scrape_raises(
    canary, deployer, make_actor, team, monkeypatch
):
    endpoint, first, second = canary
    healthy = make_endpoint(team, "healthy", [(make_version(team, "wine", 1), 100, "primary")])
    set_policy(endpoint, make_actor(deployer))
    seed(endpoint, first, 400, 0)
    seed(endpoint, second, 100, 20)
    calls: list[str] = []
    monkeypatch.setattr(scraper, "scrape_endpoint", breaking_scrape("guarded", calls))

    result = guard.guard_round()

    assert sorted(calls) == ["guarded", "healthy"]
    assert result.scraped == ["healthy"]
    assert result.errors == []
    assert (result.evaluated, result.rolled_back) == (1, [endpoint.pk])
    endpoint.refresh_from_db()
    assert endpoint.desired_release.reason == "rollback"
    assert endpoint.desired_release.restores.number == 1
    assert healthy.desired_release.number == 1


def test_the_loop_survives_raising_scrapes_and_stops_cleanly_on_sigterm(team, monkeypatch):
    make_endpoint(team, "broken", [(make_version(team, "wine", 1), 100, "primary")])
    make_endpoint(team, "fine", [(make_version(team, "iris", 1), 100, "primary")])
    calls: list[str] = []
    monkeypatch.setattr(scraper, "scrape_endpoint", breaking_scrape("broken", calls))
    rounds = []
    real_round = guard.guard_round

    def round_then_stop():
        rounds.append(len(rounds) + 1)
        if len(rounds) == 4:
            os.kill(os.getpid(), signal.SIGTERM)  # handled in this thread, before the round
        return real_round()

    monkeypatch.setattr(guard, "guard_round", round_then_stop)
    before = signal.getsignal(signal.SIGTERM)

    call_command("guard", interval=0.01)

    # Every round raised for "broken"; the signal came at the start of the fourth, which still
    # ran to its end, and the command gave SIGTERM back as it found it.
    assert rounds == [1, 2, 3, 4]
    assert calls.count("broken") == 4 and calls.count("fine") == 4
    assert signal.getsignal(signal.SIGTERM) is before


def test_once_runs_one_round_and_reports_it(team, monkeypatch, capsys):
    make_endpoint(team, "fine", [(make_version(team, "iris", 1), 100, "primary")])
    calls: list[str] = []
    monkeypatch.setattr(scraper, "scrape_endpoint", breaking_scrape("none", calls))
    call_command("guard", once=True)
    assert calls == ["fine"]
    assert capsys.readouterr().out == "scraped 1 endpoints, 0 evaluations, 0 rollbacks\n"


def test_a_second_evaluation_finds_the_rollback_written_and_does_not_roll_back_again(
    canary, deployer, make_actor
):
    endpoint, first, second = canary
    set_policy(endpoint, make_actor(deployer))
    seed(endpoint, first, 400, 0)
    seed(endpoint, second, 100, 20)
    looks = [
        services.rollback_policy_evaluate(endpoint_id=endpoint.pk, converge=False) for _ in range(2)
    ]
    assert looks[0].action == EvaluationAction.ROLLED_BACK
    # The rollback release has not gone live yet: nothing to judge, nothing to roll back.
    assert looks[1] is None
    assert Release.objects.filter(endpoint=endpoint, reason="rollback").count() == 1


def test_a_fetch_answered_before_the_stored_one_is_stale_even_if_started_later(endpoint, version):
    target = scraper.ScrapeTarget("server:x", Component.SERVER, "http://s", version.pk)
    resolve = scraper.version_resolver(endpoint)
    now = timezone.now()

    def record(success, fetched_at):
        return scraper.record(
            endpoint=endpoint,
            target=target,
            text=server_text(success=success, buckets=(success, 0, 0)),
            fetched_at=fetched_at,
            duration=0.01,
            resolve_version=resolve,
        )

    record(12, now - timedelta(seconds=1))  # started first, answered last: the newer values
    # Started later but answered earlier by the same process: not a reset, just older values.
    assert record(10, now) == (0, True)
    assert record(15, now + timedelta(seconds=1)) == (1, False)
    assert MetricPoint.objects.aggregate(total=Sum("requests"))["total"] == 15


@pytest.mark.postgres
def test_concurrent_scrapers_count_every_request_once(endpoint, version):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (set DATABASE_URL); SQLite serialises writers anyway")
    served = {"count": 0}
    lock = threading.Lock()

    def answer(request):
        time.sleep(random.uniform(0, 0.01))  # requests overtake each other on the way
        with lock:
            served["count"] += 1  # traffic between two scrapes
            count = served["count"]
        time.sleep(random.uniform(0, 0.01))  # answers overtake each other
        return httpx.Response(200, text=server_text(success=count, buckets=(count, 0, 0)))

    def scrape_repeatedly(_index):
        with httpx.Client(transport=httpx.MockTransport(answer)) as client:
            for _ in range(15):
                scraper.scrape_endpoint(
                    endpoint, observation=server_observation(endpoint, version), client=client
                )

    results = run_together(4, scrape_repeatedly)
    assert results == [None] * 4
    stored = ScrapeState.objects.get(endpoint=endpoint).values
    counted = MetricPoint.objects.aggregate(total=Sum("requests"))["total"]
    # The deltas add up to the last stored counter; a fetch taken for a reset would add more.
    assert counted == sum(v for k, v in stored.items() if k.startswith("modeldeck_requests_total"))
    assert 0 < counted <= served["count"] == 60


@pytest.mark.postgres
def test_two_evaluations_at_once_roll_back_once(canary, deployer, make_actor):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (set DATABASE_URL); SQLite serialises writers anyway")
    endpoint, first, second = canary
    set_policy(endpoint, make_actor(deployer))
    seed(endpoint, first, 400, 0)
    seed(endpoint, second, 100, 20)
    results = run_together(
        2,
        lambda _index: services.rollback_policy_evaluate(endpoint_id=endpoint.pk, converge=False),
    )
    assert not any(isinstance(result, Exception) for result in results), results
    actions = sorted(result.action if result else "skipped" for result in results)
    assert actions == [EvaluationAction.ROLLED_BACK, "skipped"]
    assert Release.objects.filter(endpoint=endpoint, reason="rollback").count() == 1
