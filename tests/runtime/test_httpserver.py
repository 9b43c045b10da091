"""The runtime's own HTTP/1.1 server, spoken to over raw sockets."""

from __future__ import annotations

import json
import socket

from tests.runtime.helpers import request, start_server

BODY = json.dumps(
    {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}
).encode()


def connect(process) -> socket.socket:
    """A raw connection to a runtime process."""
    return socket.create_connection(("127.0.0.1", process.port), timeout=10)


def infer_request(extra: bytes = b"", body: bytes = BODY, version: bytes = b"HTTP/1.1") -> bytes:
    """A raw iris inference request."""
    return (
        b"POST /v2/models/iris/infer " + version + b"\r\nHost: test\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n"
        % len(body)
        + extra
        + b"\r\n"
        + body
    )


def read_responses(connection: socket.socket, count: int) -> list[tuple[bytes, bytes]]:
    """Read count whole responses (head, body) using their Content-Length."""
    buffer = b""
    responses = []
    while len(responses) < count:
        chunk = connection.recv(65536)
        if not chunk:
            break
        buffer += chunk
        while b"\r\n\r\n" in buffer:
            head, _, rest = buffer.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            if len(rest) < length:
                break
            responses.append((head, rest[:length]))
            buffer = rest[length:]
    return responses


def test_pipelined_requests_are_answered_in_order(iris_server):
    with connect(iris_server) as connection:
        connection.sendall(
            infer_request(b"X-Request-Id: first\r\n")
            + b"GET /v2/health/ready HTTP/1.1\r\nHost: test\r\nX-Request-Id: second\r\n\r\n"
            + infer_request(b"X-Request-Id: third\r\n")
        )
        responses = read_responses(connection, 3)
    assert [head.split(b"\r\n")[0] for head, _ in responses] == [b"HTTP/1.1 200 OK"] * 3
    assert [b"x-request-id: first" in head for head, _ in responses] == [True, False, False]
    assert b"x-request-id: third" in responses[2][0]
    assert json.loads(responses[1][1]) == {"ready": True}
    assert json.loads(responses[2][1])["outputs"][0]["data"] == [0]


def test_expect_continue_is_honoured(iris_server):
    with connect(iris_server) as connection:
        head, _, body = infer_request(b"Expect: 100-continue\r\n").partition(b"\r\n\r\n")
        connection.sendall(head + b"\r\n\r\n")
        assert connection.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"
        connection.sendall(body)
        ((response_head, response_body),) = read_responses(connection, 1)
    assert response_head.startswith(b"HTTP/1.1 200 OK")
    assert json.loads(response_body)["outputs"][0]["data"] == [0]


def test_chunked_request_body_is_read(iris_server):
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (BODY[:10], BODY[10:]))
    raw = (
        b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: test\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunked + b"0\r\n\r\n"
    )
    with connect(iris_server) as connection:
        connection.sendall(raw)
        ((head, body),) = read_responses(connection, 1)
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert json.loads(body)["outputs"][0]["data"] == [0]


def test_http_1_0_connection_is_closed_after_the_answer(iris_server):
    with connect(iris_server) as connection:
        connection.sendall(infer_request(version=b"HTTP/1.0"))
        ((head, _),) = read_responses(connection, 1)
        assert b"connection: close" in head
        assert connection.recv(1024) == b""


def test_malformed_request_gets_400_and_a_closed_connection(iris_server):
    with connect(iris_server) as connection:
        connection.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        ((head, body),) = read_responses(connection, 1)
        assert head.startswith(b"HTTP/1.1 400 Bad Request")
        assert json.loads(body) == {"error": "malformed HTTP request"}
        assert connection.recv(1024) == b""


def test_keep_alive_connection_serves_many_requests(iris_server):
    with connect(iris_server) as connection:
        for _ in range(20):
            connection.sendall(infer_request())
            ((head, _),) = read_responses(connection, 1)
            assert head.startswith(b"HTTP/1.1 200 OK")


def test_uvicorn_remains_available(iris_dir):
    server = start_server(iris_dir, "iris", "1", "--http", "uvicorn")
    try:
        status, headers, payload = request("POST", server.url + "/v2/models/iris/infer", BODY)
        assert status == 200
        assert headers["x-model-version"] == "1"
        assert json.loads(payload)["outputs"][0]["data"] == [0]
    finally:
        server.stop()


def test_sigterm_exits_cleanly(iris_dir):
    server = start_server(iris_dir, "iris", "1")
    assert server.stop() == 0
