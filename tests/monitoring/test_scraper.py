"""The scraper's bookkeeping against the real database: deltas, staleness, failures, versions."""

from datetime import timedelta

import httpx
import pytest
from django.db.models import Sum
from django.utils import timezone

from deployments.targets.base import GatewayState, Observation, ServerState
from monitoring import scraper
from monitoring.models import Component, MetricPoint, ScrapeState
from tests.monitoring.test_exposition import server_text

pytestmark = pytest.mark.django_db


def gateway_text(counts: dict[str, int], start: float = 500.0) -> str:
    lines = ["# TYPE modeldeck_requests_total counter"]
    for version, count in counts.items():
        lines.append(
            f'modeldeck_requests_total{{component="gateway",endpoint="fraud",outcome="success",'
            f'variant="primary",version="{version}"}} {count}.0'
        )
    lines += ["# TYPE process_start_time_seconds gauge", f"process_start_time_seconds {start}", ""]
    return "\n".join(lines)


def server_observation(endpoint, version, url="http://10.9.9.9:1"):
    state = ServerState(
        endpoint_id=endpoint.pk,
        version_id=version.pk,
        version=version.reference,
        release_number=1,
        handle="1",
        upstream=url,
        alive=True,
        ready=True,
    )
    return Observation(servers=[state])


def total(endpoint, component, field="requests"):
    rows = MetricPoint.objects.filter(endpoint=endpoint, component=component)
    return rows.aggregate(total=Sum(field))["total"] or 0


def record(endpoint, target, text, fetched_at=None, resolve=None):
    return scraper.record(
        endpoint=endpoint,
        target=target,
        text=text,
        fetched_at=fetched_at or timezone.now(),
        duration=0.01,
        resolve_version=resolve or scraper.version_resolver(endpoint),
    )


def test_successive_scrapes_add_up_to_the_counter_value(endpoint, version):
    target = scraper.ScrapeTarget("server:x", Component.SERVER, "http://s", version.pk)
    record(endpoint, target, server_text(success=4, buckets=(4, 0, 0)))
    record(endpoint, target, server_text(success=10, buckets=(6, 4, 0)))
    record(endpoint, target, server_text(success=10, buckets=(6, 4, 0)))
    assert total(endpoint, Component.SERVER) == 10
    latency = MetricPoint.objects.filter(endpoint=endpoint).values_list("latency", flat=True)
    counts = [sum(h["counts"][i] for h in latency) for i in range(3)]
    assert counts == [6, 4, 0]


def test_a_fetch_older_than_the_stored_one_is_skipped(endpoint, version):
    target = scraper.ScrapeTarget("server:x", Component.SERVER, "http://s", version.pk)
    now = timezone.now()
    record(endpoint, target, server_text(success=12, buckets=(12, 0, 0)), fetched_at=now)
    # A slower worker fetched 10 earlier and commits later: taking it as a reset would add 10.
    touched, stale = record(
        endpoint,
        target,
        server_text(success=10, buckets=(10, 0, 0)),
        fetched_at=now - timedelta(seconds=1),
    )
    assert (touched, stale) == (0, True)
    assert total(endpoint, Component.SERVER) == 12


def test_gateway_series_are_attributed_through_the_release_variants(endpoint, version, candidate):
    target = scraper.ScrapeTarget("gateway", Component.GATEWAY, "http://g")
    record(endpoint, target, gateway_text({"iris:1": 9, "iris:2": 1, "other:5": 3}))
    rows = dict(MetricPoint.objects.filter(endpoint=endpoint).values_list("version_id", "requests"))
    # other:5 names no version of this team: skipped, never attributed to a wrong one.
    assert rows == {version.pk: 9, candidate.pk: 1}


def test_two_servers_of_one_version_add_into_the_same_minute_row(endpoint, version):
    moment = timezone.now().replace(second=10)
    for index in range(2):
        target = scraper.ScrapeTarget(f"server:{index}", Component.SERVER, "http://s", version.pk)
        record(endpoint, target, server_text(success=5, buckets=(5, 0, 0)), fetched_at=moment)
    row = MetricPoint.objects.get(endpoint=endpoint, component=Component.SERVER)
    assert (row.requests, row.latency["counts"]) == (10, [10, 0, 0])
    assert row.prediction == {"categories": {"fraud": 10}}


def test_scrape_endpoint_fetches_every_target_and_records_failures(endpoint, version, candidate):
    def answer(request):
        if request.url.host == "gateway.test":
            return httpx.Response(200, text=gateway_text({"iris:1": 3}))
        if request.url.port == 1:
            return httpx.Response(200, text=server_text(success=3, buckets=(3, 0, 0)))
        raise httpx.ConnectError("connection refused", request=request)

    gateway = GatewayState(
        endpoint_id=endpoint.pk,
        handle="g",
        url="http://public.test",
        admin_url="http://gateway.test",
        alive=True,
        ready=True,
    )
    servers = [
        ServerState(
            endpoint_id=endpoint.pk,
            version_id=version.pk,
            version="iris:1",
            release_number=1,
            handle="1",
            upstream="http://server.test:1",
            alive=True,
            ready=True,
        ),
        ServerState(
            endpoint_id=endpoint.pk,
            version_id=candidate.pk,
            version="iris:2",
            release_number=1,
            handle="2",
            upstream="http://server.test:2",
            alive=True,
            ready=True,
        ),
    ]
    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        result = scraper.scrape_endpoint(
            endpoint, observation=Observation(servers=servers, gateway=gateway), client=client
        )
    assert (result.targets, result.failed) == (3, 1)
    assert total(endpoint, Component.GATEWAY) == 3
    assert total(endpoint, Component.SERVER) == 3
    failed = ScrapeState.objects.get(endpoint=endpoint, version=candidate)
    assert failed.failures == 1 and "ConnectError" in failed.last_error
    assert failed.values == {}


def test_an_oversized_exposition_is_refused(endpoint, version, settings):
    settings.METRICS_MAX_EXPOSITION_BYTES = 100

    def answer(request):
        return httpx.Response(200, text=server_text(success=3))

    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        result = scraper.scrape_endpoint(
            endpoint, observation=server_observation(endpoint, version), client=client
        )
    assert result.failed == 1
    assert total(endpoint, Component.SERVER) == 0
    assert "larger than 100 bytes" in ScrapeState.objects.get().last_error


def test_scrape_all_skips_endpoints_that_serve_nothing(endpoint, monkeypatch):
    seen = []
    monkeypatch.setattr(
        scraper, "scrape_endpoint", lambda e: seen.append(e.name) or scraper.ScrapeResult()
    )
    endpoint.status = "stopped"
    endpoint.save(update_fields=["status"])
    assert scraper.scrape_all() == {}
    endpoint.status = "live"
    endpoint.save(update_fields=["status"])
    scraper.scrape_all()
    assert seen == ["fraud"]
