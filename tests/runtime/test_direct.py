"""The version server answers the built-in HTTP server through its direct interface and uvicorn
through ASGI: both must give the same answers, statuses, headers and counts for every kind of
request, inference or not, batched or not."""

from __future__ import annotations

import gzip
import json
import re
import socket

import pytest

from tests.runtime.helpers import metric, request, scrape, start_server

ROW = {"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}
INFER = json.dumps({"id": "r1", "inputs": [ROW]}).encode()
LARGE = json.dumps(
    {"inputs": [{**ROW, "shape": [3000, 4], "data": [5.1, 3.5, 1.4, 0.2] * 3000}]}
).encode()  # 12 000 values: run on a worker thread, not the event loop (INLINE_ELEMENTS)
BINARY_OUT = json.dumps(
    {"inputs": [ROW], "outputs": [{"name": "label", "parameters": {"binary_data": True}}]}
).encode()
# Headers whose presence and value both interfaces must agree on (the request id is random).
COMPARED = (
    "content-type",
    "content-encoding",
    "vary",
    "allow",
    "x-model-version",
    "inference-header-content-length",
    "content-length",
)
CASES = [
    ("GET", "/v2/health/live", None, {}),
    ("HEAD", "/v2/health/ready", None, {}),
    ("POST", "/v2/health/ready", b"{}", {}),
    ("GET", "/v2", None, {}),
    ("GET", "/v2/models/iris", None, {}),
    ("GET", "/v2/models/iris/versions/3", None, {}),
    ("GET", "/v2/models/iris/versions/iris:3/ready", None, {}),
    ("GET", "/v2/models/iris/versions/iris%3A3/ready", None, {}),
    ("GET", "/v2/models/other/ready", None, {}),
    ("GET", "/nowhere", None, {}),
    ("POST", "/v2/models/iris/infer", INFER, {"Content-Type": "application/json"}),
    ("POST", "/v2/models/iris/versions/3/infer", INFER, {}),
    ("POST", "/v2/models/iris/versions/4/infer", INFER, {}),
    ("POST", "/v2/models/iris/infer", INFER, {"X-Model-Version": "2"}),
    ("POST", "/v2/models/iris/infer", INFER, {"X-Request-Id": "mine-1"}),
    ("POST", "/v2/models/iris/infer", INFER, {"Accept-Encoding": "gzip"}),
    ("POST", "/v2/models/iris/infer", gzip.compress(INFER), {"Content-Encoding": "gzip"}),
    ("POST", "/v2/models/iris/infer", INFER, {"Content-Encoding": "br"}),
    ("POST", "/v2/models/iris/infer", BINARY_OUT, {}),
    ("POST", "/v2/models/iris/infer", LARGE, {}),
    ("POST", "/v2/models/iris/infer", b"{not json", {}),
    ("POST", "/v2/models/iris/infer", json.dumps({"inputs": [{**ROW, "name": "Y"}]}).encode(), {}),
    ("POST", "/v2/models/iris/infer", b"x" * 70_000, {}),
    ("GET", "/v2/models/iris/infer", None, {}),
    ("POST", "/invocations", json.dumps({"inputs": {"X": [[5.1, 3.5, 1.4, 0.2]]}}).encode(), {}),
    ("POST", "/invocations", b"[]", {}),
]


def _answers(url: str) -> list[tuple[int, dict[str, str], bytes]]:
    answers = []
    for method, path, body, headers in CASES:
        status, response_headers, payload = request(method, url + path, body, headers)
        if response_headers.get("content-encoding") == "gzip":
            payload = gzip.decompress(payload)
        kept = {name: response_headers[name] for name in COMPARED if name in response_headers}
        if "content-encoding" in kept:
            del kept["content-length"]  # compressed sizes may differ by a header byte or two
        answers.append((status, kept, payload))
    return answers


@pytest.mark.parametrize("batching", [False, True], ids=["plain", "batching"])
def test_builtin_and_uvicorn_answer_every_request_alike(iris_dir, batching):
    options = ["--max-body-bytes", "65536"]
    if batching:
        options += ["--batch-max-rows", "8", "--batch-max-delay-us", "0"]
    builtin = start_server(iris_dir, "iris", "iris:3", *options)
    uvicorn = start_server(iris_dir, "iris", "iris:3", *options, "--http", "uvicorn")
    try:
        direct, asgi = _answers(builtin.url), _answers(uvicorn.url)
        for case, one, other in zip(CASES, direct, asgi, strict=True):
            assert one == other, case[:2]
        statuses = [status for status, _, _ in direct]
        # the cases cover answers of every kind, not only successes
        assert {200, 400, 404, 405, 413, 415} <= set(statuses)
        echoed = CASES.index(("POST", "/v2/models/iris/infer", INFER, {"X-Request-Id": "mine-1"}))
        assert direct[echoed][0] == 200 and b'"id":"r1"' in direct[echoed][2]
        counts = [
            {
                outcome: metric(scrape(url), "modeldeck_requests_total", outcome=outcome)
                for outcome in ("success", "client_error", "server_error")
            }
            for url in (builtin.url, uvicorn.url)
        ]
        assert counts[0] == counts[1]
        assert counts[0]["success"] == sum(
            1 for (_, path, _, _), status in zip(CASES, statuses, strict=True)
            if status == 200 and ("infer" in path or "invocations" in path)
        )  # fmt: skip
    finally:
        builtin.stop()
        uvicorn.stop()


def test_a_request_id_is_echoed_or_made_on_both_interfaces(iris_dir):
    builtin = start_server(iris_dir, "iris", "iris:3")
    uvicorn = start_server(iris_dir, "iris", "iris:3", "--http", "uvicorn")
    try:
        for url in (builtin.url, uvicorn.url):
            _, headers, _ = request("POST", url + "/v2/models/iris/infer", INFER)
            assert re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"])
            _, headers, _ = request(
                "POST", url + "/v2/models/iris/infer", INFER, {"X-Request-Id": "mine-2"}
            )
            assert headers["x-request-id"] == "mine-2"
    finally:
        builtin.stop()
        uvicorn.stop()


def test_pipelined_requests_mixing_batched_and_immediate_answers_keep_their_order(iris_dir):
    server = start_server(
        iris_dir, "iris", "iris:3", "--batch-max-rows", "8", "--batch-max-delay-us", "2000"
    )
    try:
        raw = b"".join(
            b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: t\r\nX-Request-Id: n%d\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (number, len(INFER), INFER)
            if number % 2 == 0
            else b"GET /v2/health/ready HTTP/1.1\r\nHost: t\r\nX-Request-Id: n%d\r\n\r\n" % number
            for number in range(6)
        )
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
            connection.sendall(raw)
            buffer = b""
            while buffer.count(b"HTTP/1.1 200 OK") < 6:
                chunk = connection.recv(65536)
                assert chunk, buffer
                buffer += chunk
        assert re.findall(rb"x-request-id: (n\d)", buffer) == [b"n%d" % n for n in range(6)]
        assert buffer.count(b'"ready":true') == 3
        assert buffer.count(b'"outputs"') == 3
    finally:
        server.stop()
