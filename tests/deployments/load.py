"""Continuous load through an endpoint's gateway while its traffic moves, for the target tests."""

import threading
import time

import httpx

from deployments import services
from deployments.models import DeploymentEvent, Endpoint, Release
from deployments.targets import driver_for
from monitoring.scraper import targets_for


class Load:
    """Client threads sending requests through the gateway as fast as they can."""

    def __init__(self, endpoint: Endpoint, threads: int = 2, headers: dict | None = None):
        self.url = f"{endpoint.url}/v2/models/{endpoint.name}/infer"
        self.headers = headers or {}
        self.stopping = threading.Event()
        self.failures: list[str] = []
        self.versions: list[str] = []
        # (sent, answered, version or failure) of every request, on the monotonic clock.
        self.timeline: list[tuple[float, float, str]] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def run(self):
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}]}
        with httpx.Client(timeout=10) as client:
            while not self.stopping.is_set():
                sent = time.monotonic()
                try:
                    response = client.post(self.url, json=body, headers=self.headers)
                    outcome = response.headers.get("X-Model-Version", "")
                    if response.status_code != 200:
                        outcome = f"{response.status_code} {response.text[:200]}"
                except httpx.HTTPError as error:
                    response = None
                    outcome = f"{type(error).__name__}: {error}"
                with self.lock:
                    self.timeline.append((sent, time.monotonic(), outcome))
                    if response is not None and response.status_code == 200:
                        self.versions.append(outcome)
                    else:
                        self.failures.append(outcome)

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def mark(self) -> int:
        with self.lock:
            return len(self.versions)

    def wait_for(self, answers: int) -> None:
        """Keep the load on until `answers` more requests succeeded (or one failed)."""
        goal = self.mark() + answers
        deadline = time.monotonic() + 120
        while self.mark() < goal and not self.failures and time.monotonic() < deadline:
            self.stopping.wait(0.05)


def assert_shifts_and_rollback_lose_no_request(
    actor, endpoint: Endpoint, converge, headers: dict | None = None
) -> None:
    """Canary at 10 %, 50/50, promote, roll back to release 1 — each converged by `converge`
    while two clients send requests — then check that none failed and each phase served the
    versions it should."""
    with Load(endpoint, headers=headers) as load:
        services.endpoint_deploy(actor=actor, endpoint=endpoint, version="adder:2", weight=10)
        converge(endpoint)
        services.endpoint_set_traffic(
            actor=actor, endpoint=endpoint, variants=[
                {"version": "adder:1", "weight": 50, "role": "primary"},
                {"version": "adder:2", "weight": 50, "role": "candidate"},
            ],
        )  # fmt: skip
        converge(endpoint)
        services.endpoint_promote(actor=actor, endpoint=endpoint)
        converge(endpoint)
        promoted_at = load.mark()
        services.endpoint_rollback(actor=actor, endpoint=endpoint, release_number=1)
        converge(endpoint)
        rolled_back_at = load.mark()
        # Keep the load on until the rollback has served for a while.
        while load.mark() < rolled_back_at + 200 and not load.failures:
            load.stopping.wait(0.05)
    assert load.failures == []
    assert "adder:2" in load.versions[:promoted_at]
    assert set(load.versions[rolled_back_at + 50 :]) == {"adder:1"}
    assert len(load.versions) > 300


def served_requests(base_url: str) -> float:
    """Inference requests one version server counted on its own /metrics."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("modeldeck_requests_total{")
    )


def replica_urls(endpoint: Endpoint, version_id: int) -> list[str]:
    """Where the worker reaches each running replica of a version (for its /metrics)."""
    server = driver_for(endpoint.target).observe(endpoint=endpoint).server(f"v{version_id}")
    if server is None:
        return []
    return [replica.metrics_url or replica.upstream for replica in server.instances]


def assert_scaling_up_and_down_loses_no_request(
    actor, endpoint: Endpoint, converge, headers: dict | None = None
) -> dict:
    """adder:1 from 1 to 3 replicas and back to 1, each converged by `converge` while two
    clients send requests: none fails, and at 3 replicas every replica serves a share (its
    own /metrics counts requests). Returns the requests each replica served."""
    version_id = endpoint.desired_release.variants[0]["version_id"]
    assert len(replica_urls(endpoint, version_id)) == 1
    with Load(endpoint, headers=headers) as load:
        load.wait_for(50)
        services.endpoint_scale(actor=actor, endpoint=endpoint, version="adder:1", replicas=3)
        converge(endpoint)
        urls = replica_urls(endpoint, version_id)
        # The metrics scrape reaches every replica, not only the first.
        observation = driver_for(endpoint.target).observe(endpoint=endpoint)
        scraped = {target.url for target in targets_for(observation) if target.version_id}
        assert scraped == {url.rstrip("/") for url in urls}
        before = {url: served_requests(url) for url in urls}
        gauge = 'modeldeck_gateway_route_replicas{version="adder:1",role="primary"} 3'
        assert gauge in httpx.get(f"{endpoint.url}/metrics", timeout=10).text.splitlines()
        load.wait_for(300)
        served = {url: served_requests(url) - before[url] for url in urls}
        services.endpoint_scale(actor=actor, endpoint=endpoint, version="adder:1", replicas=1)
        converge(endpoint)
        after = replica_urls(endpoint, version_id)
        load.wait_for(100)
    assert load.failures == []
    assert len(urls) == 3
    assert len(after) == 1 and after[0] in urls
    assert all(count > 0 for count in served.values()), served
    assert set(load.versions) == {"adder:1"}
    return served


def assert_rollback_inside_the_warm_window_is_a_route_switch(
    actor, endpoint: Endpoint, converge, headers: dict | None = None
) -> float:
    """Canary adder:2, promote it (adder:1's server stays warm), then roll back under load:
    the rollback starts no server, every request sent after the switch is answered by adder:1,
    none fails. Returns the seconds from the rollback call to the last answer of adder:2."""
    services.endpoint_deploy(actor=actor, endpoint=endpoint, version="adder:2", weight=10)
    converge(endpoint)
    services.endpoint_promote(actor=actor, endpoint=endpoint)
    converge(endpoint)
    v1 = endpoint.releases.get(number=1).variants[0]["version_id"]
    assert len(replica_urls(endpoint, v1)) == 1  # warm, though nothing routes to it
    with Load(endpoint, headers=headers) as load:
        load.wait_for(100)
        called = time.monotonic()
        rollback = services.endpoint_rollback(actor=actor, endpoint=endpoint, release_number=1)
        converge(endpoint)
        switched = time.monotonic()
        load.wait_for(200)
    assert load.failures == []
    messages = list(
        DeploymentEvent.objects.filter(release=rollback).values_list("message", flat=True)
    )
    assert [m.split(":")[0].split(" ")[0] for m in messages] == [
        "Release", "Reconciling", "Traffic", "Release",
    ], messages  # fmt: skip
    assert not any("Started" in message for message in messages)
    assert Release.objects.get(pk=rollback.pk).live_at is not None
    # Order: adder:2 served until the rollback call; every request sent once the switch was
    # done went to adder:1.
    last_v2 = max(answered for _, answered, version in load.timeline if version == "adder:2")
    assert called < last_v2
    after = {version for sent, _, version in load.timeline if sent > switched}
    assert after == {"adder:1"}
    # The promoted version is now the warm one: rolling forward again would be a switch too.
    v2 = endpoint.releases.get(number=2).variants[1]["version_id"]
    assert len(replica_urls(endpoint, v2)) == 1
    return last_v2 - called
