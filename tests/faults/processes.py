"""Real processes for fault tests: a private redis-server and `celery -A config worker`.

The worker shares the test database (the SQLite file of tests/deployments/conftest.py, or the
run's own PostgreSQL test database) and the test's artifact and runtime folders, so what it
starts is what the test sees.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from django.conf import settings
from django.db import connection

from config.celery import app as celery_app
from deployments import reconciler
from tests.e2e.stack import serving_port_block

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_redis(port: int, folder) -> subprocess.Popen:
    """A throwaway redis-server (no persistence) on `port`, answering pings."""
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            client.ping()
            return process
        except redis.ConnectionError:
            time.sleep(0.05)
    process.kill()
    pytest.fail("redis-server did not start")


def reset_broker_connections() -> None:
    """Drop the app's pooled broker connections (and the producer pool built on them)."""
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@contextlib.contextmanager
def broker_of_this_process(url: str):
    """Send this process's tasks to `url`; the embedded broker's transport setting (which would
    override the URL's scheme) is off meanwhile."""
    previous = celery_app.conf.broker_url, celery_app.conf.broker_transport
    # Celery reads CELERY_BROKER_URL from the environment before its own setting (CI sets it).
    environment = os.environ.pop("CELERY_BROKER_URL", None)
    celery_app.conf.broker_url, celery_app.conf.broker_transport = url, None
    reset_broker_connections()
    try:
        yield
    finally:
        celery_app.conf.broker_url, celery_app.conf.broker_transport = previous
        if environment is not None:
            os.environ["CELERY_BROKER_URL"] = environment
        reset_broker_connections()


def wait_for(condition: Callable[[], object], *, seconds: float, what: str, poll: float = 0.1):
    """The first truthy value of `condition()`, or a failure naming `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {seconds:g} s waiting for {what}")
        time.sleep(poll)


def database_url() -> str:
    """A DATABASE_URL naming the database this test runs against."""
    database = connection.settings_dict
    if database["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{database['NAME']}"
    credentials = quote(database["USER"] or "")
    if database["PASSWORD"]:
        credentials += ":" + quote(database["PASSWORD"])
    host = f"{database['HOST'] or '127.0.0.1'}:{database['PORT'] or 5432}"
    return f"postgres://{credentials}@{host}/{quote(database['NAME'])}"


class Worker:
    """One `celery -A config worker` (prefork, one pool process) in a session of its own."""

    def __init__(
        self, *, broker_url: str, folder: Path, name: str, environment: dict | None = None
    ):
        self.log_path = folder / f"worker-{name}.log"
        dropped = {"DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL",
                   reconciler.PAUSE_ENVIRONMENT, reconciler.PAUSE_FILE_ENVIRONMENT}  # fmt: skip
        self.environment = {
            **{k: v for k, v in os.environ.items() if k not in dropped},
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "DATABASE_URL": database_url(),
            "DATABASE_CONN_MAX_AGE": "60",
            "CELERY_BROKER_URL": broker_url,
            "DEPLOYMENTS_DRAIN_SECONDS": "0.5",
            "DEPLOYMENTS_READY_TIMEOUT_SECONDS": "45",
            "LOCAL_TARGET_PORT_RANGE": os.environ.get(
                "MODELDECK_FAULT_PORT_RANGE", serving_port_block()
            ),
            **(environment or {}),
        }
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [str(BIN / "celery"), "-A", "config", "worker", "--pool", "prefork",
                 "--concurrency", "1", "--loglevel", "INFO", "--without-gossip",
                 "--without-mingle", "--without-heartbeat",
                 "--hostname", f"fault-{name}-{secrets.token_hex(3)}@%h"],
                cwd=settings.BASE_DIR, env=self.environment, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pool_pids(self) -> list[int]:
        """The pool processes (children of the main process)."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            return [int(pid) for pid in children.read_text().split()]
        except OSError:
            return []

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the main and pool processes at once, as a lost node or the OOM killer would."""
        if self.alive():
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        """Leave nothing running: a short warm shutdown, then SIGKILL."""
        if self.alive():
            os.killpg(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
        if self.alive():
            self.kill()
        with contextlib.suppress(ProcessLookupError):  # pool processes left behind
            os.killpg(self.pid, signal.SIGKILL)


class Pause:
    """The reconciler's (and image build's) fault hook: the worker holds at `step` while the
    pause file exists."""

    def __init__(self, folder: Path, step: str):
        self.step = step
        self.file = folder / f"pause-{step}"
        self.file.unlink(missing_ok=True)

    @property
    def environment(self) -> dict[str, str]:
        return {
            reconciler.PAUSE_ENVIRONMENT: self.step,
            reconciler.PAUSE_FILE_ENVIRONMENT: str(self.file),
        }

    def wait_paused(self, worker: Worker, *, seconds: float = 90) -> None:
        def paused():
            if not worker.alive():
                pytest.fail(f"the worker exited before pausing:\n{worker.log()[-4000:]}")
            return self.file.exists()

        wait_for(paused, seconds=seconds, what=f"the worker to pause at {self.step}")

    def release(self) -> None:
        self.file.unlink(missing_ok=True)
