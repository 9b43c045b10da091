"""Fixtures for deployment tests: tiny real ONNX versions, targets, and process cleanup."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections

from accounts.actor import Actor
from deployments.models import Environment, Target, TargetKind
from deployments.targets.base import installation_id
from deployments.targets.local import driver as local
from registry.models import Approval, ModelVersion, RegisteredModel
from tests.factories import ModelVersionFactory, onnx_adder  # noqa: F401  (onnx_adder re-exported)

# Subprocess tests (a reconcile run killed mid-way) need a database another process can open:
# on SQLite, use a file instead of the in-memory test database.
_default = connections.databases["default"]
if _default["ENGINE"] == "django.db.backends.sqlite3":
    _test = _default.setdefault("TEST", {})
    if not _test.get("NAME"):
        _test["NAME"] = str(Path(settings.VAR_DIR) / "test-deployments.sqlite3")


def make_version(
    registered: RegisteredModel, *, number: int, approved: bool = True, status: str = "ready"
) -> ModelVersion:
    """A validated version with a real ONNX file (onnx_adder) in artifact storage."""
    return ModelVersionFactory(
        model=registered,
        number=number,
        status=status,
        approval=Approval.APPROVED if approved else Approval.PENDING,
    )


@pytest.fixture
def adder_model(team):
    return RegisteredModel.objects.create(team=team, name="adder")


@pytest.fixture
def versions(adder_model):
    """adder:1, adder:2, adder:3 — ready and approved; each answers x + its number."""
    return {n: make_version(adder_model, number=n) for n in (1, 2, 3)}


@pytest.fixture
def dev_target(team):
    return Target.objects.create(
        team=team,
        name="local-dev",
        kind=TargetKind.LOCAL,
        environment=Environment.DEV,
        config={"threads": 1},
    )


@pytest.fixture
def production_target(team):
    return Target.objects.create(
        team=team,
        name="local-prod",
        kind=TargetKind.LOCAL,
        environment=Environment.PRODUCTION,
        config={"threads": 1},
    )


@pytest.fixture
def system():
    return Actor.system("tests")


def _kill_runtime_processes() -> list[int]:
    """SIGKILL every process this test installation started; returns their pids."""
    pids = list(local.scan_markers(f"{installation_id()}.").values())
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and local.scan_markers(f"{installation_id()}."):
        local._reap()
        time.sleep(0.05)
    return pids


@pytest.fixture
def runtime_processes(settings):
    """Fast drains for tests, and no process of ours outlives the test."""
    settings.DEPLOYMENTS_DRAIN_SECONDS = 0.5
    # Old servers stop once traffic moved away, unless a test opens the warm window itself.
    settings.DEPLOYMENTS_WARM_SECONDS = 0
    settings.DEPLOYMENTS_READY_TIMEOUT_SECONDS = 45
    _kill_runtime_processes()
    yield
    _kill_runtime_processes()


def running_markers() -> dict[str, int]:
    """marker -> pid of every live process of this test installation."""
    return local.scan_markers(f"{installation_id()}.")
