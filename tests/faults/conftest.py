"""Fault tests reuse the deployment fixtures (real ONNX versions, local targets, process cleanup)
and add a private broker and real Celery workers."""

import pytest
import redis

from tests.deployments.conftest import (  # noqa: F401  (fixtures)
    adder_model,
    dev_target,
    runtime_processes,
    system,
    versions,
)
from tests.faults.processes import Worker, broker_of_this_process, free_port, start_redis


@pytest.fixture
def broker(tmp_path):
    """A private redis-server as the broker of this test process and of its workers."""
    port = free_port()
    process = start_redis(port, tmp_path)
    url = f"redis://127.0.0.1:{port}/0"
    with broker_of_this_process(url):
        yield {"url": url, "redis": redis.Redis(port=port)}
    process.kill()
    process.wait()


@pytest.fixture
def start_worker(broker, tmp_path, runtime_processes):  # noqa: F811
    """`start_worker(name, environment)` → a running Worker, stopped after the test (before the
    serving processes are cleaned up)."""
    started: list[Worker] = []

    def start(name: str, environment: dict | None = None) -> Worker:
        worker = Worker(
            broker_url=broker["url"], folder=tmp_path, name=name, environment=environment
        )
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
