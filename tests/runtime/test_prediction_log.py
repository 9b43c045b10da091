"""The gateway's prediction log, with real processes: every answer (and shadow answer) is shipped
in batches with the endpoint token, under the caller's request id; a dashboard that is away
costs nothing but a delay; the dashboard's answer turns input sampling on."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from modeldeck_runtime.predlog import summarize

from tests.deployments.conftest import onnx_adder
from tests.monitoring.runtime_processes import (
    ADMIN_TOKEN,
    RuntimeProcess,
    free_port,
    put_routes,
    start_server,
)

pytestmark = pytest.mark.slow


class Dashboard:
    """A stand-in ingest API that records what arrives (the outside world of the runtime)."""

    def __init__(self, port: int, sample_percent: float = 0.0) -> None:
        self.batches: list[dict] = []
        self.authorizations: list[str] = []
        self.sample_percent = sample_percent
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers["Content-Length"])
                outer.batches.append(json.loads(self.rfile.read(length)))
                outer.authorizations.append(self.headers.get("Authorization", ""))
                body = json.dumps({"input_sample_percent": outer.sample_percent}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def records(self) -> list[dict]:
        return [record for batch in self.batches for record in batch["records"]]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert condition()


@pytest.fixture
def servers(tmp_path):
    started = []
    for number in (1, 2):
        folder = tmp_path / f"v{number}"
        folder.mkdir()
        (folder / "model.onnx").write_bytes(onnx_adder(number))
        started.append(start_server(folder, f"adder:{number}", endpoint="logged"))
    yield started
    for process in started:
        process.stop()


def gateway(ingest_port: int) -> RuntimeProcess:
    return RuntimeProcess(
        ["gateway", "--endpoint", "logged", "--drain-seconds", "1"],
        free_port(),
        "/-/health",
        env={
            "MODELDECK_GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN,
            "MODELDECK_GATEWAY_PREDICTION_LOG_URL": f"http://127.0.0.1:{ingest_port}/ingest/",
            "MODELDECK_GATEWAY_PREDICTION_LOG_FLUSH_SECONDS": "0.2",
        },
    )


def infer(url: str, value: float, request_id: str) -> httpx.Response:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [value]}]}
    return httpx.post(
        f"{url}/v2/models/logged/infer", json=body, headers={"X-Request-Id": request_id}
    )


def test_answers_and_shadow_answers_are_shipped_with_the_endpoint_token(servers):
    port = free_port()
    dashboard = Dashboard(port)
    proxy = gateway(port)
    try:
        put_routes(
            proxy,
            [
                {
                    "version": "adder:1",
                    "upstream": servers[0].url,
                    "weight": 100,
                    "role": "primary",
                },
                {
                    "version": "adder:2",
                    "upstream": servers[1].url,
                    "weight": 0,
                    "role": "shadow",
                    "mirror_percent": 100,
                },
            ],
        )
        for index in range(20):
            assert infer(proxy.url, float(index), f"req-{index}").status_code == 200
        wait_for(lambda: len(dashboard.records) == 40)
        assert set(dashboard.authorizations) == {f"Bearer {ADMIN_TOKEN}"}
        by_key = {(r["request_id"], r["role"]): r for r in dashboard.records}
        primary, shadow = by_key[("req-7", "primary")], by_key[("req-7", "shadow")]
        assert (primary["version"], primary["status"], primary["predicted_value"]) == (
            "adder:1",
            200,
            8.0,
        )
        assert (shadow["version"], shadow["predicted_value"]) == ("adder:2", 9.0)
        assert "inputs" not in primary
    finally:
        proxy.stop()
        dashboard.stop()


def test_records_wait_while_the_dashboard_is_away_and_sampling_follows_its_answer(servers):
    port = free_port()
    proxy = gateway(port)  # nothing listens on the ingest port yet
    dashboard = None
    try:
        put_routes(
            proxy,
            [{"version": "adder:1", "upstream": servers[0].url, "weight": 100, "role": "primary"}],
        )
        for index in range(5):
            assert infer(proxy.url, 1.0, f"early-{index}").status_code == 200
        time.sleep(0.5)  # a failed shipment or two
        dashboard = Dashboard(port, sample_percent=100.0)
        wait_for(lambda: len(dashboard.records) == 5, seconds=15)
        assert [r["request_id"] for r in dashboard.records] == [f"early-{i}" for i in range(5)]
        # The dashboard asked for inputs on every request: later records carry them.
        assert infer(proxy.url, 3.0, "sampled").status_code == 200
        wait_for(lambda: any(r["request_id"] == "sampled" for r in dashboard.records))
        sampled = next(r for r in dashboard.records if r["request_id"] == "sampled")
        assert sampled["inputs"]["inputs"][0]["data"] == [3.0]
    finally:
        proxy.stop()
        if dashboard is not None:
            dashboard.stop()


def test_summaries_of_classifier_and_regressor_outputs():
    import numpy as np

    assert summarize({"label": np.array([2, 0])})["predicted_class"] == "2"
    scores = summarize({"p": np.array([[0.1, 0.7, 0.2]], dtype=np.float32)})
    assert (scores["predicted_class"], scores["predicted_value"]) == ("1", None)
    value = summarize({"y": np.array([[1.5]], dtype=np.float32)})
    assert (value["predicted_class"], value["predicted_value"]) == ("", 1.5)
    assert summarize({"b": np.array([True])})["predicted_class"] == "true"
    assert summarize({"s": np.array([b"cat"], dtype=object)})["predicted_class"] == "cat"
