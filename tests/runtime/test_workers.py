"""Several server processes of one version on one port (SO_REUSEPORT): each serves, a scrape
of any of them counts the whole version, and they stop together."""

from __future__ import annotations

import http.client
import json
import subprocess

from modeldeck_runtime.metrics import merge_expositions

from tests.runtime.helpers import iris_rows, metric, request, scrape, start_server

SUCCESS = {"outcome": "success", "version": "iris:1"}


def children_of(pid: int) -> list[int]:
    output = subprocess.run(
        ["ps", "--ppid", str(pid), "-o", "pid="], capture_output=True, text=True, check=False
    ).stdout
    return [int(line) for line in output.split()]


def test_workers_share_the_port_and_a_scrape_counts_them_all(iris_dir):
    server = start_server(iris_dir, "iris", "iris:1", "--workers", "2")
    try:
        workers = children_of(server.process.pid)
        assert len(workers) == 1
        body = json.dumps(
            {"inputs": [{"name": "X", "datatype": "FP32", "shape": [2, 4],
                         "data": iris_rows(2).tolist()}]}
        ).encode()  # fmt: skip
        for _ in range(60):
            # a new connection each time: the kernel spreads connections over the workers
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            connection.request("POST", "/v2/models/iris/infer", body)
            response = connection.getresponse()
            assert response.status == 200
            response.read()
            connection.close()
        for _ in range(6):  # whichever worker a scrape reaches, it sees all 60
            samples = scrape(server.url)
            assert metric(samples, "modeldeck_requests_total", **SUCCESS) == 60
            assert metric(samples, "modeldeck_batch_rows_sum") == 120
        # Each worker alone served a share (new connections are spread by the kernel).
        own = set()
        for _ in range(12):
            _, _, payload = request(
                "GET", server.url + "/metrics", headers={"X-Modeldeck-Worker-Local": "1"}
            )
            line = next(
                line for line in payload.decode().splitlines()
                if line.startswith("modeldeck_requests_total") and "success" in line
            )  # fmt: skip
            own.add(float(line.rsplit(" ", 1)[1]))
        assert all(0 < count < 60 for count in own), own
        status, _, _ = request("GET", server.url + "/v2/health/ready")
        assert status == 200
    finally:
        assert server.stop() == 0
    assert all(subprocess.run(["kill", "-0", str(pid)], check=False).returncode for pid in workers)


def test_merging_adds_counts_and_keeps_the_earliest_start():
    first = (
        b"# HELP modeldeck_requests Inference requests.\n# TYPE modeldeck_requests counter\n"
        b'modeldeck_requests_total{version="v:1",outcome="success"} 3.0\n'
        b"# HELP process_start_time_seconds Start.\n# TYPE process_start_time_seconds gauge\n"
        b"process_start_time_seconds 100.0\n"
    )
    second = first.replace(b"} 3.0", b"} 4.0").replace(b"seconds 100.0", b"seconds 90.0")
    merged = merge_expositions([first, second]).decode()
    assert 'modeldeck_requests_total{outcome="success",version="v:1"} 7.0' in merged
    assert "process_start_time_seconds 90.0" in merged


def test_a_worker_that_dies_stops_the_version_so_its_supervisor_restarts_it(iris_dir):
    import signal

    server = start_server(iris_dir, "iris", "iris:1", "--workers", "2")
    try:
        (worker,) = children_of(server.process.pid)
        subprocess.run(["kill", f"-{signal.SIGKILL.value}", str(worker)], check=True)
        assert server.process.wait(timeout=30) == 1
    finally:
        server.stop()
