"""The scraper against real runtime processes: exact request counts across a restart, and
latency percentiles that agree with the clients' own timings."""

import http.client
import json
import time

import numpy as np
import pytest
from django.db.models import Sum

from deployments.targets.base import GatewayState, Observation, ServerState
from monitoring import histograms, scraper, selectors
from monitoring.models import Component, MetricPoint, ScrapeState
from tests.monitoring.runtime_processes import (
    put_routes,
    start_gateway,
    start_server,
    wait_for_count,
    write_model,
)

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

PROFILE = {
    "rows": 100,
    "features": [
        {
            "name": "amount",
            "input": "X",
            "index": 0,
            "kind": "numeric",
            "edges": [0.0, 1.0, 2.0, 3.0],
            "counts": [40, 30, 30],
        },
        {
            "name": "age",
            "input": "X",
            "index": 1,
            "kind": "numeric",
            "edges": [0.0, 50.0, 100.0],
            "counts": [50, 50],
        },
    ],
    "prediction": None,
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_model(tmp_path_factory.mktemp("double"), PROFILE)


def send(url: str, count: int, *, start: int = 0) -> list[float]:
    """`count` inference requests on one keep-alive connection; returns client-side seconds."""
    connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=10)
    timings = []
    try:
        for index in range(start, start + count):
            rows = [[(index % 30) / 10.0, float(index % 100)]]
            body = json.dumps({"inputs": {"X": rows}}).encode()
            began = time.perf_counter()
            connection.request("POST", "/invocations", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            timings.append(time.perf_counter() - began)
            assert response.status == 200
    finally:
        connection.close()
    return timings


def server_state(endpoint, version, url):
    return ServerState(
        endpoint_id=endpoint.pk,
        version_id=version.pk,
        version=version.reference,
        release_number=1,
        handle="test",
        upstream=url,
        alive=True,
        ready=True,
    )


def requests_recorded(endpoint, component=Component.SERVER) -> int:
    rows = MetricPoint.objects.filter(endpoint=endpoint, component=component)
    return rows.aggregate(total=Sum("requests"))["total"] or 0


def latency_histogram(endpoint, component=Component.SERVER) -> dict:
    merged: dict = {}
    rows = MetricPoint.objects.filter(endpoint=endpoint, component=component)
    for latency in rows.values_list("latency", flat=True):
        merged = histograms.merge(merged, latency)
    return merged


def bucket_index(bounds, value: float) -> int:
    return int(np.searchsorted(np.asarray(bounds), value, side="left"))


def test_rollup_counts_every_request_once_across_a_server_restart(model_dir, endpoint, version):
    server = start_server(model_dir, version.reference, endpoint=endpoint.name)
    try:
        observation = Observation(servers=[server_state(endpoint, version, server.url)])
        timings = send(server.url, 120)
        wait_for_count(server.url, 120)
        scraper.scrape_endpoint(endpoint, observation=observation)
        assert requests_recorded(endpoint) == 120

        # Scraping again without traffic adds nothing.
        scraper.scrape_endpoint(endpoint, observation=observation)
        assert requests_recorded(endpoint) == 120

        # Latency percentiles within one histogram bucket of the clients' own measurements.
        latency = latency_histogram(endpoint)
        for level in (0.5, 0.95, 0.99):
            measured = float(np.quantile(timings, level))
            rolled = histograms.quantile(latency, level)
            assert (
                abs(
                    bucket_index(latency["bounds"], rolled)
                    - bucket_index(latency["bounds"], measured)
                )
                <= 1
            ), (level, rolled, measured)

        first_start = ScrapeState.objects.get(endpoint=endpoint).process_start
        port = server.port
        server.stop()
        # The restarted server (same port) serves more requests than before the restart, so a
        # plain "counter went down" check would miss the reset; the start time does not.
        server = start_server(model_dir, version.reference, endpoint=endpoint.name, port=port)
        send(server.url, 150, start=120)
        wait_for_count(server.url, 150)
        scraper.scrape_endpoint(endpoint, observation=observation)
        assert requests_recorded(endpoint) == 270
        assert ScrapeState.objects.get(endpoint=endpoint).process_start != first_start
        scraper.scrape_endpoint(endpoint, observation=observation)
        assert requests_recorded(endpoint) == 270

        # Feature histograms arrive too (120 + 150 rows, one per request).
        features: dict = {}
        for row in MetricPoint.objects.filter(endpoint=endpoint).values_list("features", flat=True):
            features = histograms.merge_features(features, row)
        assert sum(features["amount"]["counts"]) == 270
        assert features["amount"]["bounds"] == [0.0, 1.0, 2.0, 3.0]
    finally:
        server.stop()


def test_gateway_and_server_are_rolled_up_separately_and_the_page_uses_the_gateway(
    model_dir, endpoint, version
):
    server = start_server(model_dir, version.reference, endpoint=endpoint.name)
    gateway = start_gateway(endpoint=endpoint.name)
    try:
        put_routes(
            gateway,
            [
                {
                    "version": version.reference,
                    "upstream": server.url,
                    "weight": 100,
                    "role": "primary",
                }
            ],
        )
        send(gateway.url, 40)
        wait_for_count(gateway.url, 40)
        wait_for_count(server.url, 40)
        observation = Observation(
            servers=[server_state(endpoint, version, server.url)],
            gateway=GatewayState(
                endpoint_id=endpoint.pk,
                handle="g",
                url=gateway.url,
                admin_url=gateway.url,
                alive=True,
                ready=True,
            ),
        )
        result = scraper.scrape_endpoint(endpoint, observation=observation)
        assert (result.targets, result.failed) == (2, 0)
        assert requests_recorded(endpoint, Component.GATEWAY) == 40
        assert requests_recorded(endpoint, Component.SERVER) == 40

        series = selectors.metric_series(endpoint=endpoint, range_name="15m")
        assert series["source"] == "gateway"
        primary = next(v for v in series["versions"] if v["version_id"] == version.pk)
        assert primary["totals"]["requests"] == 40
        assert primary["variant"] == "primary"
        assert primary["totals"]["inference_mean"] is not None
    finally:
        gateway.stop()
        server.stop()
