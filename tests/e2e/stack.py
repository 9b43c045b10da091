"""A whole Modeldeck on the embedded defaults, started as real processes for browser journeys.

Web (gunicorn), a Celery worker and beat run against a fresh SQLite file and the filesystem
broker in a temporary folder — the same defaults the README's run command uses.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def serving_port_block(size: int = 100) -> str:
    """A random LOCAL_TARGET_PORT_RANGE of its own in 20000-31999 (for a stack's or a fault
    test's serving processes) outside this run's own range, which the xdist workers split
    between them, so that no other test's serving processes answer for its endpoints."""
    own = os.environ.get("MODELDECK_TEST_PORT_RANGE") or os.environ.get(
        "LOCAL_TARGET_PORT_RANGE", "18100-18999"
    )
    low, high = (int(part) for part in own.split("-"))
    starts = [
        start
        for start in range(20000, 32000 - size + 1, size)
        if start + size - 1 < low or start > high
    ]
    if not starts:
        raise RuntimeError(f"no block of {size} ports in 20000-31999 outside {own}")
    start = secrets.choice(starts)
    return f"{start}-{start + size - 1}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Stack:
    """A running Modeldeck: its URL, its folder, and how to run manage.py against it."""

    var_dir: Path
    port: int = field(default_factory=free_port)
    serving_ports: str = field(default_factory=serving_port_block)
    # One key for every process of the stack (web, worker, beat, manage.py), as in production.
    secret_key: str = field(default_factory=lambda: "e2e-" + secrets.token_hex(16))
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        keep = {
            k: v
            for k, v in os.environ.items()
            if k
            not in {
                "DATABASE_URL",
                "CELERY_BROKER_URL",
                "REDIS_URL",
                "DJANGO_SETTINGS_MODULE",
                "DJANGO_ALLOW_ASYNC_UNSAFE",
            }
        }
        return {
            **keep,
            "DEBUG": "true",
            "MODELDECK_VAR_DIR": str(self.var_dir),
            "DJANGO_SETTINGS_MODULE": "config.settings.base",
            "RECONCILE_INTERVAL_SECONDS": "3",
            "METRICS_SCRAPE_INTERVAL_SECONDS": "2",
            "LOCAL_TARGET_PORT_RANGE": self.serving_ports,
            "SECRET_KEY": self.secret_key,
        }

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.var_dir / f"{name}.log", "wb")  # noqa: SIM115 (lives as long as the process)
        self.processes.append(
            subprocess.Popen(
                argv,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )

    def start(self) -> Stack:
        self.var_dir.mkdir(parents=True, exist_ok=True)
        self.manage("migrate", "--no-input")
        self._spawn(
            "web",
            [
                str(BIN / "gunicorn"),
                "config.wsgi",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                "2",
                "--threads",
                "4",
            ],
        )
        self._spawn(
            "worker",
            [
                str(BIN / "celery"),
                "-A",
                "config",
                "worker",
                "--loglevel",
                "INFO",
                "--concurrency",
                "2",
            ],
        )
        self._spawn(
            "beat",
            [
                str(BIN / "celery"),
                "-A",
                "config",
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(self.var_dir / "beat-schedule"),
            ],
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"web did not come up:\n{(self.var_dir / 'web.log').read_text()}")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        # Serving processes the worker started are owned by the stack's runtime folder.
        subprocess.run(
            [
                sys.executable,
                "manage.py",
                "shell",
                "-c",
                "from deployments import services; services.local_processes_stop_all()",
            ],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            timeout=60,
        )

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
            for p in sorted(self.var_dir.glob("*.log"))
        )
