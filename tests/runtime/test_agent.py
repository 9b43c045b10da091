"""The edge agent's parts without Django: manifest checks, replay refusal, resumable download
with sha256 verification, folder containment, metric summaries and the smoke request."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
from pathlib import Path

import pytest
from modeldeck_runtime import agent as agent_module
from modeldeck_runtime.agent import (
    Agent,
    AgentError,
    check_outputs,
    contained,
    smoke_request,
    summarize,
    verify_manifest,
)
from modeldeck_runtime.protocol import canonical

KEY = bytes(range(32))


def signed(manifest: dict, key: bytes = KEY) -> dict:
    return {
        "manifest": manifest,
        "signature": hmac.new(key, canonical(manifest), hashlib.sha256).hexdigest(),
    }


def test_the_server_signs_the_canonical_bytes_the_agent_checks():
    from edge.signing import sign

    manifest = {"device": "d", "sequence": 3, "version": "m:1", "signature": {"é": [1, 2]}}
    assert (
        canonical(manifest)
        == '{"device":"d","sequence":3,"signature":{"é":[1,2]},"version":"m:1"}'.encode()
    )
    assert signed(manifest)["signature"] == sign(manifest, KEY)


def test_only_manifests_signed_for_this_device_are_accepted():
    manifest = {"device": "cam-1", "sequence": 2, "version": "m:1"}
    assert verify_manifest(signed(manifest), KEY, "cam-1") == manifest
    with pytest.raises(AgentError, match="signature"):
        verify_manifest(signed(manifest, b"other"), KEY, "cam-1")
    with pytest.raises(AgentError, match="not this one"):
        verify_manifest(signed(manifest), KEY, "cam-2")
    with pytest.raises(AgentError, match="sequence"):
        verify_manifest(signed({**manifest, "sequence": "2"}), KEY, "cam-1")
    for document in (None, [], {"manifest": manifest}):
        with pytest.raises(AgentError):
            verify_manifest(document, KEY, "cam-1")


def test_paths_stay_inside_the_agent_folder(tmp_path):
    root = tmp_path.resolve()
    assert contained(root, "downloads", "x.part") == root / "downloads" / "x.part"
    for parts in (("..", "etc"), ("/etc/passwd",), ("slots", "..", "..", "x")):
        with pytest.raises(AgentError, match="leaves"):
            contained(root, *parts)


class ArtifactServer:
    """Serves one file with Range support, optionally cutting the first response short."""

    def __init__(self, content: bytes, cut_first_at: int | None = None) -> None:
        self.content = content
        self.cut = cut_first_at
        self.ranges: list[str | None] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                requested = self.headers.get("Range")
                server.ranges.append(requested)
                start = int(requested[len("bytes=") :].rstrip("-")) if requested else 0
                body = server.content[start:]
                if server.cut is not None:
                    # Announce everything, send part, then drop the connection.
                    self.send_response(206 if requested else 200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: server.cut])
                    self.wfile.flush()
                    server.cut = None
                    self.close_connection = True
                    return
                self.send_response(206 if requested else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self):
        self.http.shutdown()
        self.http.server_close()


def make_agent(tmp_path: Path, server: str) -> Agent:
    (tmp_path / "identity.json").write_text(
        json.dumps({"server": server, "token": "edg_x", "key": KEY.hex(), "device": "cam-1"})
    )
    return Agent(tmp_path, port=1, request_timeout_seconds=5)


def test_download_resumes_with_range_and_verifies_sha256(tmp_path):
    content = bytes(range(256)) * 400
    server = ArtifactServer(content, cut_first_at=30_000)
    try:
        agent = make_agent(tmp_path, server.url)
        manifest = {
            "sequence": 2,
            "version": "m:1",
            "sha256": hashlib.sha256(content).hexdigest(),
            "size": len(content),
            "artifact": "/api/v1/edge/artifacts/7/",
        }
        with pytest.raises(agent_module.LinkDown):
            agent.download(manifest)
        partial = tmp_path / "downloads" / f"{manifest['sha256']}.part"
        assert partial.stat().st_size == 30_000
        path = agent.download(manifest)
        assert path.read_bytes() == content
        assert server.ranges == [None, "bytes=30000-"]
        # A file that does not match its sha256 is refused and thrown away.
        wrong = {**manifest, "sha256": "0" * 64, "sequence": 3}
        with pytest.raises(AgentError, match="sha256 does not match"):
            agent.download(wrong)
        assert not (tmp_path / "downloads" / f"{'0' * 64}.part").exists()
        for bad in ({"artifact": "/etc/passwd"}, {"artifact": "http://evil/api"}, {"size": -1}):
            with pytest.raises(AgentError):
                agent.download({**manifest, **bad})
    finally:
        server.close()


def test_older_manifests_are_refused_as_replays(tmp_path):
    agent = make_agent(tmp_path, "http://127.0.0.1:9")
    agent.state.update(
        applied_sequence=5,
        current={"slot": "a", "version": "m:2", "sequence": 5, "manifest": {}},
    )
    agent.consider({"sequence": 3, "version": "m:1"})
    assert "replay" in agent.state["reason"]
    assert agent.state["applied_sequence"] == 5 and agent.state["current"]["version"] == "m:2"
    # A newer manifest for what already serves is acknowledged without a download.
    agent.consider({"sequence": 6, "version": "m:2"})
    assert agent.state["applied_sequence"] == 6
    assert json.loads((tmp_path / "state.json").read_text())["applied_sequence"] == 6


def test_summaries_hold_counts_and_histograms_of_the_growth_only():
    first = """# TYPE modeldeck_requests_total counter
modeldeck_requests_total{endpoint="e",version="1",variant="edge",component="server",outcome="success"} 3.0
modeldeck_requests_total{endpoint="e",version="1",variant="edge",component="server",outcome="client_error"} 1.0
# TYPE modeldeck_request_duration_seconds histogram
modeldeck_request_duration_seconds_bucket{endpoint="e",version="1",variant="edge",component="server",le="0.01"} 2.0
modeldeck_request_duration_seconds_bucket{endpoint="e",version="1",variant="edge",component="server",le="+Inf"} 4.0
modeldeck_request_duration_seconds_count{endpoint="e",version="1",variant="edge",component="server"} 4.0
modeldeck_request_duration_seconds_sum{endpoint="e",version="1",variant="edge",component="server"} 0.5
# TYPE modeldeck_feature_value histogram
modeldeck_feature_value_bucket{endpoint="e",version="1",variant="edge",component="server",feature="x",le="0.0"} 1.0
modeldeck_feature_value_bucket{endpoint="e",version="1",variant="edge",component="server",feature="x",le="+Inf"} 3.0
"""  # noqa: E501
    values, summary = summarize(first, {})
    assert (summary["requests"], summary["successes"], summary["client_errors"]) == (4, 3, 1)
    assert summary["latency"] == {"bounds": [0.01], "counts": [2, 2]}
    assert summary["latency_sum"] == 0.5
    assert summary["features"] == {"x": {"bounds": [0.0], "counts": [1, 2]}}
    second = first.replace("} 3.0\nmodeldeck_requests_total", "} 5.0\nmodeldeck_requests_total")
    _values, growth = summarize(second, values)
    assert (growth["requests"], growth["successes"]) == (2, 2)
    assert growth["latency"] == {"bounds": [0.01], "counts": [0, 0]}


def test_smoke_request_and_output_check():
    request = smoke_request(
        {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [-1, 3]},
                {"name": "city", "datatype": "BYTES", "shape": [-1]},
            ]
        }
    )
    assert request["inputs"][0] == {
        "name": "x",
        "shape": [1, 3],
        "datatype": "FP32",
        "data": [0] * 3,
    }
    assert request["inputs"][1]["data"] == [""]
    ok = json.dumps({"outputs": [{"name": "y", "datatype": "FP32", "data": [1.5]}]}).encode()
    assert check_outputs(ok) == ""
    nan = json.dumps({"outputs": [{"name": "y", "datatype": "FP32", "data": [None]}]}).encode()
    assert "NaN" in check_outputs(nan)
    assert check_outputs(b"not json")
    assert check_outputs(b'{"outputs": []}') == "answered no outputs"
