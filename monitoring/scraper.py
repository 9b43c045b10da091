"""Scrape the runtime's /metrics of every live endpoint into per-minute rollups.

For each endpoint the driver says what runs (gateway and version servers). Each target's
exposition is fetched outside any transaction, then one transaction per target locks its
ScrapeState, turns counters into deltas against the stored values, adds them to the minute's
MetricPoint rows and stores the new values — so a failure anywhere stores nothing, and a retry
neither loses nor double-counts. Two scrapers may run at once (beat's task and `manage.py guard`):
a fetch is stored only if it is newer than the stored one, by its fetch time and, for the same
process, by its counters (overlapping requests can be answered in the other order).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime

import httpx
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from deployments.models import Endpoint, EndpointStatus, Release
from deployments.targets import DriverError, driver_for
from deployments.targets.base import Observation
from monitoring import exposition, histograms
from monitoring.models import Component, MetricPoint, ScrapeState
from registry.models import ModelVersion

logger = logging.getLogger(__name__)

# Endpoints whose runtime may be serving traffic (a rollout in progress still serves).
SCRAPED_STATUSES = (EndpointStatus.LIVE, EndpointStatus.DEGRADED, EndpointStatus.PROGRESSING)
VERSION_REFERENCE = re.compile(r"^(?P<model>[a-z0-9][a-z0-9._-]{0,62}):(?P<number>\d{1,9})$")


class ScrapeError(Exception):
    """A target could not be read (network, status, size, format)."""


@dataclass(frozen=True)
class ScrapeTarget:
    """One /metrics URL of an endpoint."""

    key: str
    component: str
    url: str
    # Set for version servers: everything they expose belongs to this version.
    version_id: int | None = None


@dataclass
class ScrapeResult:
    """What one endpoint's scrape did, for logs, self-metrics and tests."""

    targets: int = 0
    failed: int = 0
    stale: int = 0
    points: int = 0


def targets_for(observation: Observation) -> list[ScrapeTarget]:
    """The gateway and every version server of an observation, as scrape targets."""
    targets = []
    gateway = observation.gateway
    if gateway is not None and (gateway.admin_url or gateway.url):
        # admin_url is how the worker reaches the gateway; /metrics is served on the same port.
        base = (gateway.admin_url or gateway.url).rstrip("/")
        targets.append(ScrapeTarget("gateway", Component.GATEWAY, base))
    for server in observation.servers:
        # Every replica of the version counts its own requests; drivers whose upstream is not
        # reachable from the worker may offer a `metrics_url`.
        for replica in getattr(server, "instances", ()) or (server,):
            base = (getattr(replica, "metrics_url", "") or replica.upstream).rstrip("/")
            if base:
                key = f"server:v{server.version_id}:{base}"
                targets.append(ScrapeTarget(key, Component.SERVER, base, server.version_id))
    return targets


def fetch(client: httpx.Client, target: ScrapeTarget) -> str:
    """The exposition text of one target, size-capped."""
    limit = settings.METRICS_MAX_EXPOSITION_BYTES
    try:
        with client.stream("GET", target.url + "/metrics") as response:
            if response.status_code != 200:
                raise ScrapeError(f"{target.url}/metrics answered {response.status_code}")
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > limit:
                    raise ScrapeError(f"{target.url}/metrics is larger than {limit} bytes")
                chunks.append(chunk)
    except httpx.HTTPError as error:
        raise ScrapeError(f"{target.url}/metrics: {error.__class__.__name__}: {error}") from None
    return b"".join(chunks).decode("utf-8", errors="replace")


def version_resolver(endpoint: Endpoint):
    """A function from gateway labels ("model:N") to a version id of the endpoint's team."""
    named: dict[str, int] = {}
    recent = Release.objects.filter(endpoint=endpoint).order_by("-number")[:20]
    for variants in recent.values_list("variants", flat=True):
        for variant in variants or []:
            if variant.get("version") and variant.get("version_id"):
                named.setdefault(str(variant["version"]), int(variant["version_id"]))
    # A version deleted since its release was written has nothing left to attribute counts to.
    existing = set(ModelVersion.objects.filter(pk__in=named.values()).values_list("pk", flat=True))
    known: dict[str, int | None] = {
        reference: pk for reference, pk in named.items() if pk in existing
    }

    def resolve(labels: dict[str, str]) -> int | None:
        reference = labels.get("version", "")
        if reference not in known:
            match = VERSION_REFERENCE.match(reference)
            known[reference] = (
                ModelVersion.objects.filter(
                    model__team_id=endpoint.team_id,
                    model__name=match["model"],
                    number=int(match["number"]),
                )
                .values_list("pk", flat=True)
                .first()
                if match
                else None
            )
        return known[reference]

    return resolve


def minute_of(moment: datetime) -> datetime:
    """The start of the minute a moment falls in."""
    return moment.replace(second=0, microsecond=0)


def _add_to_point(
    *,
    endpoint_id: int,
    version_id: int,
    component: str,
    minute: datetime,
    contribution: exposition.Contribution,
) -> None:
    """Add one contribution to its minute row: counters with F(), histograms under the row lock."""
    keys = {
        "endpoint_id": endpoint_id,
        "version_id": version_id,
        "component": component,
        "minute": minute,
    }
    row = MetricPoint.objects.select_for_update().filter(**keys).first()
    if row is None:
        try:
            with transaction.atomic():
                MetricPoint.objects.create(**keys, **_values(contribution))
            return
        except IntegrityError:
            # Another target of the same version created the row first.
            row = MetricPoint.objects.select_for_update().get(**keys)
    updates = {
        name: F(name) + getattr(contribution, name)
        for name in (*contribution.COUNTERS, *contribution.FLOATS)
        if getattr(contribution, name)
    }
    for name in contribution.HISTOGRAMS:
        if getattr(contribution, name):
            updates[name] = histograms.merge(getattr(row, name), getattr(contribution, name))
    if contribution.features:
        updates["features"] = histograms.merge_features(row.features, contribution.features)
    if contribution.variant:
        updates["variant"] = contribution.variant
    MetricPoint.objects.filter(pk=row.pk).update(**updates)


def _values(contribution: exposition.Contribution) -> dict:
    names = (*contribution.COUNTERS, *contribution.FLOATS, *contribution.HISTOGRAMS)
    values = {name: getattr(contribution, name) for name in names}
    return {**values, "features": contribution.features, "variant": contribution.variant}


def record(
    *,
    endpoint: Endpoint,
    target: ScrapeTarget,
    text: str,
    fetched_at: datetime,
    duration: float,
    resolve_version,
) -> tuple[int, bool]:
    """Store one target's scrape; returns (rows touched, whether it was stale and skipped)."""
    parsed = exposition.parse(text)
    with transaction.atomic():
        state, _ = ScrapeState.objects.select_for_update().get_or_create(
            endpoint=endpoint,
            target=target.key,
            defaults={
                "component": target.component,
                "url": target.url,
                "version_id": target.version_id,
            },
        )
        if state.fetched_at is not None and fetched_at <= state.fetched_at:
            # A newer fetch of this target was stored already; these values are older.
            return 0, True
        restarted = exposition.restarted(state.process_start, parsed.process_start)
        if _answered_before_stored(state, parsed, restarted=restarted):
            # Started later but answered earlier than the stored fetch (a concurrent scraper):
            # taking its lower counters as a reset would count them twice.
            return 0, True
        growth = exposition.deltas(state.values or {}, parsed, process_restarted=restarted)
        if target.version_id is not None:
            version_id = target.version_id
            parts = exposition.contributions(parsed, growth, lambda _labels: version_id)
        else:
            parts = exposition.contributions(parsed, growth, resolve_version)
        minute = minute_of(fetched_at)
        for version_id in sorted(parts):
            _add_to_point(
                endpoint_id=endpoint.pk,
                version_id=version_id,
                component=target.component,
                minute=minute,
                contribution=parts[version_id],
            )
        state.values = parsed.values
        state.process_start = parsed.process_start
        state.fetched_at = fetched_at
        state.scraped_at = timezone.now()
        state.duration_seconds = duration
        state.failures = 0
        state.last_error = ""
        state.url = target.url
        state.save()
    return len(parts), False


def _answered_before_stored(
    state: ScrapeState, parsed: exposition.Exposition, *, restarted: bool
) -> bool:
    """Whether the same process (known start time, unchanged) reports a counter lower than the
    stored value: counters of one runtime process never go down, so these values are older.
    Without a start time a lower counter still means a reset, as `exposition.deltas` says."""
    if restarted or state.process_start is None or parsed.process_start is None:
        return False
    previous = state.values or {}
    return any(
        sample.monotonic and key in previous and sample.value < previous[key]
        for key, sample in parsed.samples.items()
    )


def record_failure(*, endpoint: Endpoint, target: ScrapeTarget, error: str) -> None:
    """Note a failed scrape; the stored values stay, so the next success has the full delta."""
    state, _ = ScrapeState.objects.get_or_create(
        endpoint=endpoint,
        target=target.key,
        defaults={
            "component": target.component,
            "url": target.url,
            "version_id": target.version_id,
        },
    )
    ScrapeState.objects.filter(pk=state.pk).update(
        failures=F("failures") + 1, last_error=error[:2000]
    )


def scrape_endpoint(
    endpoint: Endpoint,
    *,
    observation: Observation | None = None,
    client: httpx.Client | None = None,
) -> ScrapeResult:
    """Scrape every target of one endpoint; failures are recorded, never raised."""
    result = ScrapeResult()
    if observation is None:
        try:
            observation = driver_for(endpoint.target).observe(endpoint=endpoint)
        except DriverError as error:
            logger.warning("cannot observe endpoint %s: %s", endpoint.name, error)
            return result
    timeout = settings.METRICS_SCRAPE_TIMEOUT_SECONDS
    own_client = client is None
    if own_client:
        client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(1.0, timeout)),
            follow_redirects=False,
            trust_env=False,
        )
    resolve = version_resolver(endpoint)
    targets = targets_for(observation)
    existing = set(
        ModelVersion.objects.filter(
            pk__in={target.version_id for target in targets if target.version_id}
        ).values_list("pk", flat=True)
    )
    try:
        for target in targets:
            if target.version_id is not None and target.version_id not in existing:
                continue  # a server of a deleted version: nothing to attribute its counts to
            result.targets += 1
            fetched_at = timezone.now()
            started = time.perf_counter()
            try:
                text = fetch(client, target)
                points, stale = record(
                    endpoint=endpoint,
                    target=target,
                    text=text,
                    fetched_at=fetched_at,
                    duration=time.perf_counter() - started,
                    resolve_version=resolve,
                )
            except (ScrapeError, exposition.ExpositionError) as error:
                result.failed += 1
                logger.info("scrape of %s failed: %s", target.url, error)
                record_failure(endpoint=endpoint, target=target, error=str(error))
                continue
            result.points += points
            result.stale += int(stale)
    finally:
        if own_client:
            client.close()
    return result


def scrape_all() -> dict[str, ScrapeResult]:
    """Scrape every endpoint that may be serving traffic; one failure does not stop the rest
    (the failed endpoint is logged and left out of the results)."""
    from monitoring.metrics import SCRAPE_DURATION

    results = {}
    endpoints = Endpoint.objects.filter(status__in=SCRAPED_STATUSES).select_related("target")
    for endpoint in endpoints:
        started = time.perf_counter()
        try:
            results[endpoint.name] = scrape_endpoint(endpoint)
        except Exception:
            logger.exception("scrape of endpoint %s failed", endpoint.name)
            continue
        SCRAPE_DURATION.observe(time.perf_counter() - started)
    return results
