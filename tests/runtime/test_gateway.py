"""The gateway over real HTTP: split, stickiness, pinning, shadows, table changes, admin, drain."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import math
import threading
import time

import aiohttp
import pytest

from tests.runtime.helpers import (
    ADMIN_TOKEN,
    metric,
    post_json,
    put_routes,
    request,
    routes,
    scrape,
    start_gateway,
)

IRIS_INFER = "/v2/models/iris/infer"
ROW = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}
ROW_BYTES = json.dumps(ROW).encode()
DRAINED = (0,)


def infer(url: str, headers: dict[str, str] | None = None, timeout: float = 10):
    """One iris inference; returns status, headers and the decoded answer."""
    status, response_headers, payload = request(
        "POST", url + IRIS_INFER, ROW_BYTES, headers, timeout=timeout
    )
    return status, response_headers, json.loads(payload)


def wait_for(condition, seconds: float = 10.0) -> bool:
    """Poll until condition() is true or time runs out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_real_traffic_is_split_by_weight(gateway, iris_server, iris_server_v2):
    assert (
        put_routes(
            gateway,
            routes(("1", iris_server, 50, "primary"), ("2", iris_server_v2, 50, "candidate")),
        )[0]
        == 200
    )
    draws = 400
    versions = []
    for _ in range(draws):
        status, headers, answer = infer(gateway.url)
        assert status == 200
        assert answer["model_version"] == headers["x-model-version"]
        versions.append(headers["x-model-version"])
    # 4.5 standard deviations: a correct gateway fails this about once in 150 000 runs
    assert abs(versions.count("2") - draws / 2) <= 4.5 * math.sqrt(draws / 4)
    assert set(versions) == {"1", "2"}


def test_sticky_header_keeps_each_user_on_one_version(gateway, iris_server, iris_server_v2):
    table = routes(("1", iris_server, 50, "primary"), ("2", iris_server_v2, 50, "candidate"))
    table["sticky"] = {"header": "X-User-Id"}
    assert put_routes(gateway, table)[0] == 200
    seen: dict[str, set[str]] = {}
    for user in range(20):
        for _ in range(4):
            _, headers, _ = infer(gateway.url, {"X-User-Id": f"user-{user}"})
            seen.setdefault(f"user-{user}", set()).add(headers["x-model-version"])
    assert all(len(versions) == 1 for versions in seen.values())
    assert set.union(*seen.values()) == {"1", "2"}


def test_sticky_cookie_keeps_each_user_on_one_version(gateway, iris_server, iris_server_v2):
    table = routes(("1", iris_server, 50, "primary"), ("2", iris_server_v2, 50, "candidate"))
    table["sticky"] = {"cookie": "uid"}
    assert put_routes(gateway, table)[0] == 200
    for user in range(10):
        answers = {
            infer(gateway.url, {"Cookie": f"theme=dark; uid=u{user}"})[1]["x-model-version"]
            for _ in range(4)
        }
        assert len(answers) == 1


def test_model_version_header_pins_a_version(gateway, iris_server, iris_server_v2):
    table = routes(("1", iris_server, 100, "primary"), ("2", iris_server_v2, 0, "candidate"))
    assert put_routes(gateway, table)[0] == 200
    for _ in range(10):
        status, headers, answer = infer(gateway.url, {"X-Model-Version": "2"})
        assert status == 200
        assert headers["x-model-version"] == "2"
        assert answer["model_version"] == "2"
    status, _, answer = infer(gateway.url, {"X-Model-Version": "7"})
    assert status == 404
    assert answer == {"error": "version '7' is not routed on this endpoint; routed versions: 1, 2"}


def test_request_id_is_set_and_echoed(gateway, iris_server):
    assert put_routes(gateway, routes(("1", iris_server, 100, "primary")))[0] == 200
    _, headers, _ = infer(gateway.url, {"X-Request-Id": "trace-42"})
    assert headers["x-request-id"] == "trace-42"
    _, headers, _ = infer(gateway.url)
    assert len(headers["x-request-id"]) == 32


def test_metadata_and_invocations_are_proxied(gateway, iris_server):
    assert put_routes(gateway, routes(("1", iris_server, 100, "primary")))[0] == 200
    status, _, payload = request("GET", gateway.url + "/v2/models/iris")
    assert status == 200
    assert json.loads(payload)["versions"] == ["1"]
    status, answer = post_json(
        gateway.url + "/invocations", {"inputs": {"X": [[5.1, 3.5, 1.4, 0.2]]}}
    )
    assert status == 200
    assert answer["outputs"]["output_label"] == [0]


def test_failing_and_hanging_shadows_never_affect_the_caller(
    iris_server, failing_upstream, hanging_upstream
):
    gateway = start_gateway("--shadow-timeout", "60")
    try:
        table = routes(
            ("1", iris_server, 100, "primary"),
            ("8", failing_upstream.url, 100, "shadow"),
            ("9", hanging_upstream.url, 100, "shadow"),
        )
        assert put_routes(gateway, table)[0] == 200
        requests = 20
        for _ in range(requests):
            # The hanging shadow holds each mirrored copy for 60 seconds; the caller's
            # 5-second client timeout proves the answer does not wait for it.
            status, headers, answer = infer(gateway.url, timeout=5)
            assert status == 200
            assert headers["x-model-version"] == "1"
            assert answer["outputs"][0]["data"] == [0]

        def counted() -> bool:
            samples = scrape(gateway.url)
            failed = metric(
                samples, "modeldeck_requests_total", version="8", outcome="server_error"
            )
            hanging = metric(samples, "modeldeck_in_flight_requests", version="9")
            return failed == requests and hanging == requests

        assert wait_for(counted)
        samples = scrape(gateway.url)
        assert (
            metric(samples, "modeldeck_requests_total", version="1", outcome="success") == requests
        )
    finally:
        gateway.stop()


def test_agreeing_shadow_comparisons_are_counted(gateway, iris_server, iris_server_v2):
    table = routes(("1", iris_server, 100, "primary"), ("2", iris_server_v2, 100, "shadow"))
    assert put_routes(gateway, table)[0] == 200
    requests = 25
    for _ in range(requests):
        assert infer(gateway.url)[0] == 200

    def compared() -> float:
        return metric(
            scrape(gateway.url),
            "modeldeck_shadow_comparisons_total",
            version="2",
            primary_version="1",
            agreed="true",
        )

    assert wait_for(lambda: compared() == requests)
    samples = scrape(gateway.url)
    assert metric(samples, "modeldeck_shadow_comparisons_total", agreed="false") == 0
    assert (
        metric(
            samples, "modeldeck_requests_total", version="2", variant="shadow", outcome="success"
        )
        == requests
    )


def test_route_changes_under_load_lose_no_requests(gateway, iris_server, iris_server_v2):
    assert put_routes(gateway, routes(("1", iris_server, 100, "primary")))[0] == 200
    tables = [
        routes(
            ("1", iris_server, 50, "primary"), ("2", iris_server_v2, 50, "candidate"), generation=2
        ),
        routes(
            ("1", iris_server, 10, "primary"), ("2", iris_server_v2, 90, "candidate"), generation=3
        ),
        routes(("2", iris_server_v2, 100, "primary"), generation=4),
        routes(("1", iris_server, 100, "primary"), generation=5),
        routes(
            ("1", iris_server, 70, "primary"), ("2", iris_server_v2, 30, "candidate"), generation=6
        ),
    ]
    clients = 4
    per_client = 600

    async def run() -> tuple[list[tuple[int, str]], list[int]]:
        results: list[tuple[int, str]] = []
        progress_at_swaps: list[int] = []

        async def client(session: aiohttp.ClientSession) -> None:
            for _ in range(per_client):
                async with session.post(
                    gateway.url + IRIS_INFER,
                    data=ROW_BYTES,
                    headers={"Content-Type": "application/json"},
                ) as response:
                    await response.read()
                    results.append((response.status, response.headers.get("X-Model-Version")))

        async def admin() -> None:
            # Its own session, so the PUTs never queue behind the clients' pooled connections.
            headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            async with aiohttp.ClientSession() as session:
                for table in tables:
                    while len(results) < (table["generation"] - 1) * clients * per_client // 7:
                        await asyncio.sleep(0.005)
                    async with session.put(
                        gateway.url + "/-/routes", json=table, headers=headers
                    ) as response:
                        assert response.status == 200
                    progress_at_swaps.append(len(results))

        connector = aiohttp.TCPConnector(limit=clients)
        async with aiohttp.ClientSession(connector=connector) as session:
            await asyncio.gather(admin(), *(client(session) for _ in range(clients)))
        return results, progress_at_swaps

    # A thread of its own: a session-scoped Playwright (the e2e tier) keeps an event loop
    # running in the main thread, where asyncio.run() refuses to start.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        results, progress_at_swaps = pool.submit(asyncio.run, run()).result()
    assert len(results) == clients * per_client
    # every swap happened while requests were still being sent
    assert len(progress_at_swaps) == len(tables)
    assert max(progress_at_swaps) < clients * per_client
    assert [status for status, _ in results if status != 200] == []
    assert {version for _, version in results} == {"1", "2"}
    _, _, payload = request(
        "GET", gateway.url + "/-/routes", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert json.loads(payload)["generation"] == 6


def test_admin_routes_need_the_token(gateway, iris_server):
    table = routes(("1", iris_server, 100, "primary"), generation=3)
    assert put_routes(gateway, table)[0] == 200
    replacement = json.dumps(routes(("1", iris_server, 100, "primary"), generation=9)).encode()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": ADMIN_TOKEN}):
        for method in ("GET", "PUT"):
            status, _, payload = request(method, gateway.url + "/-/routes", replacement, headers)
            assert status == 401
            assert json.loads(payload) == {
                "error": "a valid admin token is required (Authorization: Bearer ...)"
            }
    status, _, payload = request(
        "GET", gateway.url + "/-/routes", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert json.loads(payload)["generation"] == 3


def test_older_generation_is_refused_and_changes_nothing(gateway, iris_server, iris_server_v2):
    current = routes(("1", iris_server, 100, "primary"), generation=5)
    assert put_routes(gateway, current)[0] == 200
    older = routes(("2", iris_server_v2, 100, "primary"), generation=4)
    status, answer = put_routes(gateway, older)
    assert status == 409
    assert answer == {
        "error": "generation 4 is older than the current generation 5; the table was not changed"
    }
    status, _, payload = request(
        "GET", gateway.url + "/-/routes", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert json.loads(payload) == current | {
        "routes": [current["routes"][0] | {"weight": 100, "role": "primary"}]
    }
    assert all(infer(gateway.url)[1]["x-model-version"] == "1" for _ in range(5))


def test_invalid_table_is_refused_with_400(gateway, iris_server):
    table = routes(("1", iris_server, 60, "primary"))
    status, answer = put_routes(gateway, table)
    assert status == 400
    assert answer == {"error": "weights of the primary and candidate routes sum to 60, not 100"}


def test_gateway_readiness_follows_its_upstreams(gateway, iris_server):
    assert request("GET", gateway.url + "/v2/health/live")[0] == 200
    assert request("GET", gateway.url + "/v2/health/ready")[0] == 503
    dead = routes(("1", "http://127.0.0.1:9", 100, "primary"))
    assert put_routes(gateway, dead)[0] == 200
    assert request("GET", gateway.url + "/v2/health/ready")[0] == 503
    status, answer = post_json(gateway.url + IRIS_INFER, ROW)
    assert status == 502
    assert answer["error"].startswith("version '1' is unreachable")
    assert put_routes(gateway, routes(("1", iris_server, 100, "primary"), generation=2))[0] == 200
    assert request("GET", gateway.url + "/v2/health/ready")[0] == 200


def test_state_file_brings_the_table_back_after_a_restart(tmp_path, iris_server):
    state = tmp_path / "routes.json"
    first = start_gateway("--state-file", str(state))
    table = routes(("1", iris_server, 100, "primary"), generation=12)
    table["sticky"] = {"header": "X-User-Id"}
    try:
        assert put_routes(first, table)[0] == 200
    finally:
        assert first.stop() in DRAINED
    second = start_gateway("--state-file", str(state))
    try:
        status, _, payload = request(
            "GET", second.url + "/-/routes", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert status == 200
        assert json.loads(payload)["generation"] == 12
        assert json.loads(payload)["sticky"] == {"header": "X-User-Id"}
        assert infer(second.url)[0] == 200
    finally:
        second.stop()


def test_routes_file_sets_the_initial_table(tmp_path, iris_server):
    routes_file = tmp_path / "initial.json"
    routes_file.write_text(json.dumps(routes(("1", iris_server, 100, "primary"), generation=2)))
    process = start_gateway("--routes-file", str(routes_file))
    try:
        assert infer(process.url)[0] == 200
    finally:
        process.stop()


def test_sigterm_drains_in_flight_requests(slow_upstream):
    process = start_gateway()
    try:
        table = routes(("1", slow_upstream.url, 100, "primary"))
        assert put_routes(process, table)[0] == 200
        outcome: dict[str, int] = {}

        def call() -> None:
            outcome["status"] = request("POST", process.url + "/invocations", b"{}", timeout=10)[0]

        caller = threading.Thread(target=call)
        caller.start()
        assert wait_for(lambda: metric(scrape(process.url), "modeldeck_in_flight_requests") == 1, 5)
        returncode = process.stop()
        caller.join(10)
        assert outcome == {"status": 200}
        assert returncode in DRAINED
    finally:
        process.stop()


@pytest.mark.parametrize("path", ["/-/health", "/v2/health/live"])
def test_gateway_liveness(gateway, path):
    assert request("GET", gateway.url + path)[0] == 200
