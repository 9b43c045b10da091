"""Monitoring page and metrics API benchmark: prints, asserts nothing.

    python bench/monitoring_pages.py [--days 30] [--repeat 5]

Seeds a throwaway database with 30 days of per-minute rollups for one endpoint with two
versions (gateway and version-server rows, latency histograms, feature histograms), rolls them
up into hourly rows as the periodic task does, then prints the server time (median of a few runs,
measured in-process through the whole middleware stack) of the endpoint monitoring page and of
`GET /api/v1/endpoints/{name}/metrics/` per range, with the ratio to the anchor (under 1 beats it).
Works on SQLite (default) and PostgreSQL (DATABASE_URL; a test database is created and dropped).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.utils import timezone  # noqa: E402

# Anchor: the goal for the monitoring page; the API is read against the same figure.
ANCHOR_PAGE_SECONDS = 0.150
RANGES = ("15m", "1h", "24h", "7d", "30d")
LATENCY_BOUNDS = [
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
]
FEATURE_EDGES = [float(edge) for edge in np.linspace(0, 10, 11)]


def seed(days: int) -> str:
    """One team, one endpoint, two versions, `days` of minute rows; returns the username."""
    from accounts.models import Membership, Role, Team
    from deployments.models import Endpoint, EndpointStatus, Release, Target
    from monitoring.models import Component, MetricPoint
    from registry.models import ModelVersion, RegisteredModel

    team = Team.objects.create(name="bench")
    user = django.contrib.auth.get_user_model().objects.create_user("bench", password="x")
    Membership.objects.create(user=user, team=team, role=Role.VIEWER)
    model = RegisteredModel.objects.create(team=team, name="bench-model")
    versions = [ModelVersion.objects.create(model=model, number=n, status="ready") for n in (1, 2)]
    target = Target.objects.create(team=team, name="bench-local", kind="local")
    endpoint = Endpoint.objects.create(
        team=team, name="bench", target=target, status=EndpointStatus.LIVE
    )
    release = Release.objects.create(
        endpoint=endpoint,
        number=1,
        reason="deploy",
        actor_label="bench",
        variants=[
            {
                "version_id": versions[0].pk,
                "version": versions[0].reference,
                "weight": 90,
                "role": "primary",
                "mirror_percent": 0,
            },
            {
                "version_id": versions[1].pk,
                "version": versions[1].reference,
                "weight": 10,
                "role": "candidate",
                "mirror_percent": 0,
            },
        ],
    )
    Endpoint.objects.filter(pk=endpoint.pk).update(desired_release=release, live_release=release)

    generator = np.random.default_rng(1)
    now = timezone.now().replace(second=0, microsecond=0)
    minutes = days * 24 * 60
    written = 0
    started = time.perf_counter()
    buckets = len(LATENCY_BOUNDS) + 1
    for version, share in zip(versions, (0.9, 0.1), strict=True):
        variant = "primary" if share > 0.5 else "candidate"
        requests = generator.poisson(600 * share, minutes) + 1
        errors = generator.binomial(requests, 0.01)
        latency = generator.multinomial(requests, np.full(buckets, 1 / buckets))
        features = [generator.multinomial(requests, np.full(12, 1 / 12)) for _ in range(4)]
        batch: list[MetricPoint] = []
        for offset in range(minutes):
            count = int(requests[offset])
            histogram = {"bounds": LATENCY_BOUNDS, "counts": latency[offset].tolist()}
            common = {
                "endpoint": endpoint,
                "version": version,
                "minute": now - timedelta(minutes=offset),
                "variant": variant,
                "requests": count,
                "successes": count - int(errors[offset]),
                "server_errors": int(errors[offset]),
                "latency": histogram,
                "latency_sum": count * 0.01,
            }
            batch.append(MetricPoint(component=Component.GATEWAY, **common))
            batch.append(
                MetricPoint(
                    component=Component.SERVER,
                    features={
                        f"f{index}": {"bounds": FEATURE_EDGES, "counts": column[offset].tolist()}
                        for index, column in enumerate(features)
                    },
                    inference=histogram,
                    inference_sum=count * 0.002,
                    **common,
                )
            )
            if len(batch) >= 5000:
                MetricPoint.objects.bulk_create(batch)
                written += len(batch)
                batch.clear()
        MetricPoint.objects.bulk_create(batch)
        written += len(batch)
    print(
        f"seeded {written:,} minute rows ({days} days × 2 versions × gateway+server) "
        f"in {time.perf_counter() - started:.1f} s"
    )
    return user.get_username()


def rollup(days: int) -> None:
    from monitoring import services
    from monitoring.models import MetricHour

    settings.METRICS_MINUTE_RETENTION_DAYS = days + 1  # roll the whole seeded span up
    started = time.perf_counter()
    hours = services.metrics_rollup_hours()
    print(
        f"rolled up {hours} hours into {MetricHour.objects.count():,} hourly rows "
        f"in {time.perf_counter() - started:.1f} s"
    )


def timed(client: Client, url: str, repeat: int, **headers) -> tuple[float, int, int]:
    samples = []
    status = size = 0
    for _ in range(repeat):
        began = time.perf_counter()
        response = client.get(url, **headers)
        samples.append(time.perf_counter() - began)
        status, size = response.status_code, len(response.content)
    return statistics.median(samples), status, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=5)
    arguments = parser.parse_args()

    created_test_database = None
    if connection.vendor != "sqlite":
        # Its own throwaway database, so a test run on the same server is never disturbed.
        connection.settings_dict.setdefault("TEST", {})["NAME"] = "monitoring_pages_bench"
        created_test_database = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    else:
        call_command("migrate", verbosity=0)
    try:
        username = seed(arguments.days)
        rollup(arguments.days)
        client = Client(HTTP_HOST="127.0.0.1")
        client.force_login(django.contrib.auth.get_user_model().objects.get(username=username))
        client.get("/endpoints/bench/monitoring/?range=15m")  # warm templates and imports
        print(
            f"\n{connection.vendor}, median of {arguments.repeat} runs, "
            f"anchor {ANCHOR_PAGE_SECONDS * 1000:.0f} ms"
        )
        print(
            f"{'range':>6} {'page ms':>9} {'ratio':>6} {'htmx ms':>9} {'API ms':>8} {'ratio':>6} "
            f"{'API KB':>7}"
        )
        for range_name in RANGES:
            page, page_status, _ = timed(
                client, f"/endpoints/bench/monitoring/?range={range_name}", arguments.repeat
            )
            partial, _, _ = timed(
                client,
                f"/endpoints/bench/monitoring/?range={range_name}",
                arguments.repeat,
                HTTP_HX_REQUEST="true",
            )
            api, api_status, size = timed(
                client, f"/api/v1/endpoints/bench/metrics/?range={range_name}", arguments.repeat
            )
            assert_ok = (
                "" if page_status == api_status == 200 else f"  (HTTP {page_status}/{api_status})"
            )
            print(
                f"{range_name:>6} {page * 1000:9.1f} {page / ANCHOR_PAGE_SECONDS:6.2f} "
                f"{partial * 1000:9.1f} {api * 1000:8.1f} {api / ANCHOR_PAGE_SECONDS:6.2f} "
                f"{size / 1024:7.0f}{assert_ok}"
            )
    finally:
        if created_test_database is not None:
            connection.creation.destroy_test_db(created_test_database, verbosity=0)


if __name__ == "__main__":
    main()
