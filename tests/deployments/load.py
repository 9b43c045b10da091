"""Continuous load through an endpoint's gateway while its traffic moves, for the target tests."""

import threading

import httpx

from deployments import services
from deployments.models import Endpoint


class Load:
    """Client threads sending requests through the gateway as fast as they can."""

    def __init__(self, endpoint: Endpoint, threads: int = 2, headers: dict | None = None):
        self.url = f"{endpoint.url}/v2/models/{endpoint.name}/infer"
        self.headers = headers or {}
        self.stopping = threading.Event()
        self.failures: list[str] = []
        self.versions: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def run(self):
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}]}
        with httpx.Client(timeout=10) as client:
            while not self.stopping.is_set():
                try:
                    response = client.post(self.url, json=body, headers=self.headers)
                    outcome = response.headers.get("X-Model-Version", "")
                    if response.status_code != 200:
                        outcome = f"{response.status_code} {response.text[:200]}"
                except httpx.HTTPError as error:
                    response = None
                    outcome = f"{type(error).__name__}: {error}"
                with self.lock:
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
