"""The `modeldeck` CLI against a live stack: gunicorn, a Celery worker and beat on SQLite, started
as real processes (tests/e2e/stack.py), a team with an admin, a bearer token and a local target."""

from __future__ import annotations

import csv
import json
import os
import secrets
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.stack import Stack, serving_port_block

BIN = Path(sys.executable).parent
MODELDECK = str(BIN / "modeldeck")
TEAM = "kit-ci"


def port_range() -> range | None:
    """LOCAL_TARGET_PORT_RANGE, when the developer or CI gave this run a block of ports."""
    text = os.environ.get("LOCAL_TARGET_PORT_RANGE", "")
    try:
        low, high = (int(part) for part in text.split("-", 1))
    except ValueError:
        return None
    return range(low, high + 1) if high - low >= 299 else None


def free_port_in(ports: range) -> int:
    """A free port from `ports`, starting at a random one so parallel runs rarely race."""
    start = secrets.randbelow(len(ports))
    for offset in range(len(ports)):
        port = ports[(start + offset) % len(ports)]
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {ports.start}-{ports.stop - 1}")


def port_plan() -> dict[str, object]:
    """Web and MLflow ports and a block of serving ports, inside this run's range if it has
    one: web and MLflow from its first 100 ports, serving from a random later 100-block."""
    ports = port_range()
    if ports is None:
        return {"web": None, "serving": serving_port_block(), "mlflow": None}
    blocks = (len(ports) - 100) // 100
    start = ports.start + 100 + secrets.randbelow(blocks) * 100
    return {
        "web": free_port_in(range(ports.start, ports.start + 50)),
        "serving": f"{start}-{start + 99}",
        "mlflow": free_port_in(range(ports.start + 50, ports.start + 100)),
    }


@dataclass
class LiveStack:
    stack: Stack
    token: str
    other_token: str
    mlflow_port: int | None

    @property
    def url(self) -> str:
        return self.stack.url

    def env(self, token: str | None = None, **extra: str) -> dict[str, str]:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("MODELDECK_")}
        environment.update(
            MODELDECK_URL=self.url,
            MODELDECK_TOKEN=token or self.token,
            MODELDECK_CONFIG="/nonexistent/modeldeck.toml",
            **extra,
        )
        return environment

    def cli(
        self, *args: str, token: str | None = None, cwd: Path | None = None, timeout: int = 300
    ) -> subprocess.CompletedProcess:
        """Run the installed `modeldeck` console script; its real exit status and output."""
        return subprocess.run(
            [MODELDECK, *args],
            env=self.env(token),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def cli_json(self, *args: str, **kwargs) -> dict:
        result = self.cli("--json", *args, **kwargs)
        assert result.returncode == 0, f"{args} exited {result.returncode}:\n{result.stderr}"
        return json.loads(result.stdout)


@pytest.fixture(scope="session")
def live(tmp_path_factory):
    plan = port_plan()
    stack = Stack(
        var_dir=tmp_path_factory.mktemp("client-stack"), serving_ports=str(plan["serving"])
    )
    if plan["web"] is not None:
        stack.port = int(plan["web"])
    stack.start()
    try:
        stack.manage("addmember", "ci-bot", TEAM, "admin", "--create-user")
        token = stack.manage("createtoken", "ci-bot", TEAM, "--name", "ci").strip().splitlines()[-1]
        stack.manage("addmember", "outsider", "kit-other", "admin", "--create-user")
        other = stack.manage("createtoken", "outsider", "kit-other").strip().splitlines()[-1]
        stack.manage("ensure_local_target", TEAM, "--name", "kit-local")
        yield LiveStack(stack, token, other, plan["mlflow"])  # type: ignore[arg-type]
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.stop()


def write_classifier(folder: Path, *, features: int = 4, seed: int = 0) -> dict[str, Path]:
    """A real scikit-learn classifier as ONNX (probability tensors, no ZipMap), with a reference
    CSV and a scoring CSV of the same columns."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, features)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    model = LogisticRegression().fit(x, y)
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = folder / "model.onnx"
    onnx_path.write_bytes(
        to_onnx(model, x[:1], options={id(model): {"zipmap": False}}).SerializeToString()
    )
    columns = [f"f{i}" for i in range(features)]
    reference = folder / "reference.csv"
    with reference.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(x[:200].round(5).tolist())
    return {"onnx": onnx_path, "reference": reference, "model": model, "x": x}
