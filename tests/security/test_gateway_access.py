"""The gateway's route table and its inference keys, on real local processes: a table rewritten
behind Modeldeck's back is restored (even at the same generation), keys gate inference, and a
key rotates under load without one failed request."""

from __future__ import annotations

import threading

import httpx
import pytest
import tritonclient.http as httpclient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.utils import InferenceServerException

from deployments import access, services, tasks
from deployments.models import DeploymentEvent, Endpoint, EndpointStatus, EventLevel
from deployments.targets.gateway import gateway_read_routes, same_route_table
from tests.conftest import actor_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}]}
_client = httpx.Client(timeout=10)


def converge(endpoint: Endpoint) -> Endpoint:
    assert tasks.reconcile_endpoint(endpoint.pk) in {"converged", "unchanged"}
    endpoint.refresh_from_db()
    assert endpoint.status == EndpointStatus.LIVE, endpoint.status_reason
    return endpoint


def infer(endpoint: Endpoint, **headers) -> httpx.Response:
    return _client.post(
        f"{endpoint.url}/v2/models/{endpoint.name}/infer", json=BODY, headers=headers
    )


@pytest.fixture
def live(versions, dev_target, deployer, runtime_processes):
    actor = actor_for(deployer)
    endpoint = services.endpoint_create(
        actor=actor, name="guarded", target=dev_target, version="adder:1"
    )
    services.endpoint_deploy(actor=actor, endpoint=endpoint, version="adder:2", weight=20)
    return actor, converge(endpoint)


def tampered(table: dict, kind: str, value: int) -> dict:
    """A rewrite of the live table that keeps its generation (or raises it)."""
    routes = [dict(route) for route in table["routes"]]
    if kind == "upstream":
        routes[0]["upstream"] = f"http://127.0.0.1:{1024 + value % 60000}"
    elif kind == "weights":
        share = value % 101
        routes[0]["weight"], routes[1]["weight"] = share, 100 - share
    elif kind == "sticky":
        return {**table, "routes": routes, "sticky": {"header": f"X-Pin-{value % 1000}"}}
    elif kind == "drop-keys":
        return {**table, "routes": routes, "access": {"require_key": False, "keys": []}}
    elif kind == "add-key":
        digest = f"{value:064x}"[-64:]
        held = (table.get("access") or {}).get("keys", [])
        return {**table, "routes": routes, "access": {"require_key": True, "keys": [*held, digest]}}
    return {**table, "routes": routes}


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    kind=st.sampled_from(["upstream", "weights", "sticky", "drop-keys", "add-key"]),
    value=st.integers(min_value=1, max_value=2**63),
)
def test_a_table_rewritten_at_the_same_generation_is_restored_with_an_event(live, kind, value):
    _actor, endpoint = live
    endpoint.refresh_from_db()
    original = gateway_read_routes(admin_url=endpoint.url, token=endpoint.gateway_token)
    forged = tampered(original, kind, value)
    if same_route_table(forged, original):
        return  # e.g. the same weights drawn again: nothing was changed
    response = _client.put(
        f"{endpoint.url}/-/routes",
        json=forged,
        headers={"Authorization": f"Bearer {endpoint.gateway_token}"},
    )
    assert response.status_code == 200, response.text
    assert gateway_read_routes(admin_url=endpoint.url, token=endpoint.gateway_token) != original
    warnings_before = DeploymentEvent.objects.filter(level=EventLevel.WARNING).count()

    assert tasks.reconcile_endpoint(endpoint.pk) == "converged"

    restored = gateway_read_routes(admin_url=endpoint.url, token=endpoint.gateway_token)
    assert same_route_table(restored, original)
    assert DeploymentEvent.objects.filter(level=EventLevel.WARNING).count() > warnings_before
    assert tasks.reconcile_endpoint(endpoint.pk) == "unchanged"


def test_keys_gate_inference_and_revocation_reaches_the_gateway(live, admin_member):
    actor, endpoint = live
    assert endpoint.require_key is False  # local endpoints start open
    assert infer(endpoint).status_code == 200
    access.endpoint_require_key_set(actor=actor, endpoint=endpoint, require_key=True)
    endpoint = converge(endpoint)
    refused = infer(endpoint)
    assert refused.status_code == 401
    assert "API key" in refused.json()["error"]
    key, plain = access.endpoint_key_create(actor=actor, endpoint=endpoint, name="ci")
    endpoint = converge(endpoint)
    table = gateway_read_routes(admin_url=endpoint.url, token=endpoint.gateway_token)
    assert plain not in str(table)  # only digests travel
    assert table["access"]["keys"] == [key.digest]
    assert infer(endpoint, Authorization=f"Bearer {plain}").status_code == 200
    assert infer(endpoint, **{"X-Api-Key": plain}).status_code == 200
    for wrong in (plain[:-1], plain + "x", f"Basic {plain}", key.digest, key.prefix, ""):
        header = {"Authorization": wrong} if wrong.startswith("Basic") else {"X-Api-Key": wrong}
        assert infer(endpoint, **header).status_code == 401, wrong
    # tritonclient passes the key as a header, as the README shows.
    triton = httpclient.InferenceServerClient(endpoint.url.removeprefix("http://"))
    metadata = triton.get_model_metadata(endpoint.name, headers={"X-Api-Key": plain})
    assert metadata["name"] == endpoint.name
    with pytest.raises(InferenceServerException):
        triton.get_model_metadata(endpoint.name)
    # Health stays open for probes.
    assert _client.get(f"{endpoint.url}/v2/health/ready").status_code == 200
    access.endpoint_key_revoke(actor=actor, endpoint=endpoint, key=key)
    endpoint = converge(endpoint)
    assert infer(endpoint, Authorization=f"Bearer {plain}").status_code == 401


class KeyLoad:
    """Client threads calling the endpoint with one key each, recording every outcome."""

    def __init__(self, endpoint: Endpoint):
        self.url = f"{endpoint.url}/v2/models/{endpoint.name}/infer"
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.outcomes: dict[str, list[int]] = {}
        self.threads: list[threading.Thread] = []

    def start(self, name: str, key: str, threads: int = 2) -> None:
        self.outcomes[name] = []
        for _ in range(threads):
            thread = threading.Thread(target=self.run, args=(name, key), daemon=True)
            self.threads.append(thread)
            thread.start()

    def run(self, name: str, key: str) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stopping.is_set():
                try:
                    status = client.post(self.url, json=BODY, headers={"X-Api-Key": key})
                    code = status.status_code
                except httpx.HTTPError:
                    code = 0
                with self.lock:
                    self.outcomes[name].append(code)

    def count(self, name: str) -> int:
        with self.lock:
            return len(self.outcomes[name])

    def snapshot(self, name: str) -> list[int]:
        with self.lock:
            return list(self.outcomes[name])

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=30)


def test_rotating_a_key_under_load_fails_no_request_of_either_holder(live):
    actor, endpoint = live
    old, old_plain = access.endpoint_key_create(actor=actor, endpoint=endpoint, name="old")
    access.endpoint_require_key_set(actor=actor, endpoint=endpoint, require_key=True)
    endpoint = converge(endpoint)
    load = KeyLoad(endpoint)
    try:
        load.start("old", old_plain)
        while load.count("old") < 100:
            load.stopping.wait(0.02)
        # Rotation, step 1: a new key next to the old one; both are valid from here on.
        _new, new_plain = access.endpoint_key_create(actor=actor, endpoint=endpoint, name="new")
        endpoint = converge(endpoint)
        load.start("new", new_plain)
        # The overlap, with a reconcile (route table push) in the middle of it.
        while load.count("new") < 200:
            load.stopping.wait(0.02)
        services.endpoint_set_traffic(
            actor=actor,
            endpoint=endpoint,
            variants=[
                {"version": "adder:1", "weight": 50, "role": "primary"},
                {"version": "adder:2", "weight": 50, "role": "candidate"},
            ],
        )
        endpoint = converge(endpoint)
        mark = load.count("new")
        while load.count("new") < mark + 200:
            load.stopping.wait(0.02)
        old_during_overlap = load.snapshot("old")
        new_during_overlap = load.snapshot("new")
        # Step 2: the old key goes; its holders are refused, the new key's are not.
        access.endpoint_key_revoke(actor=actor, endpoint=endpoint, key=old)
        endpoint = converge(endpoint)
        revoked_at = load.count("old")
        mark = load.count("new")
        while load.count("old") < revoked_at + 20 or load.count("new") < mark + 100:
            load.stopping.wait(0.02)
    finally:
        load.stop()
    assert set(old_during_overlap) == {200}
    assert set(new_during_overlap) == {200}
    assert len(old_during_overlap) > 300 and len(new_during_overlap) >= 400
    assert set(load.snapshot("new")) == {200}
    # Each of the two old-key threads may have had one request in flight across the revoke.
    assert set(load.snapshot("old")[revoked_at + 2 :]) == {401}
