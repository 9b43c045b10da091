"""Endpoints with releases and versions, and a way to seed rollup rows, for monitoring tests."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from deployments.models import Endpoint, EndpointStatus
from monitoring.models import Component, MetricPoint
from registry.models import Approval, ModelVersion
from tests.factories import (
    EndpointFactory,
    ModelVersionFactory,
    RegisteredModelFactory,
    TargetFactory,
)

LATENCY_BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]


def make_version(team, model_name: str = "iris", number: int = 1, profile=None) -> ModelVersion:
    """A ready version of a model of `team` (no model file: monitoring never serves it)."""
    return ModelVersionFactory(
        model=RegisteredModelFactory(name=model_name, team=team),
        number=number,
        approval=Approval.PENDING,
        signature={},
        reference_profile=profile,
        artifact=False,
    )


def make_endpoint(
    team, name: str, variants: list[tuple[ModelVersion, int, str]], status=EndpointStatus.LIVE
) -> Endpoint:
    """An endpoint whose desired and live release serve `variants` = [(version, weight, role)]."""
    target = TargetFactory(name=f"{team.name}-local", team=team, config={})
    return EndpointFactory(team=team, name=name, target=target, status=status, variants=variants)


def latency(counts: list[int], bounds: list[float] = LATENCY_BOUNDS) -> dict:
    """A latency histogram; `counts` has one entry per bound plus the +Inf bucket."""
    assert len(counts) == len(bounds) + 1
    return {"bounds": list(bounds), "counts": list(counts)}


def seed_point(
    endpoint,
    version,
    minute: datetime,
    *,
    requests: int = 0,
    server_errors: int = 0,
    client_errors: int = 0,
    component: str = Component.GATEWAY,
    latency_counts=None,
    variant: str = "primary",
    features=None,
    prediction=None,
) -> MetricPoint:
    """One minute row, written directly."""
    return MetricPoint.objects.create(
        endpoint=endpoint,
        version=version,
        component=component,
        minute=minute,
        variant=variant,
        requests=requests,
        successes=requests - server_errors - client_errors,
        client_errors=client_errors,
        server_errors=server_errors,
        latency=latency(latency_counts) if latency_counts else {},
        features=features or {},
        prediction=prediction or {},
    )


def at(text: str) -> datetime:
    """A UTC moment from 'YYYY-mm-dd HH:MM[:SS]'."""
    pattern = "%Y-%m-%d %H:%M:%S" if text.count(":") == 2 else "%Y-%m-%d %H:%M"
    return datetime.strptime(text, pattern).replace(tzinfo=UTC)


@pytest.fixture
def version(team):
    return make_version(team, "iris", 1)


@pytest.fixture
def candidate(team):
    return make_version(team, "iris", 2)


@pytest.fixture
def endpoint(team, version, candidate):
    """A live endpoint of `team`: iris:1 primary 90 %, iris:2 candidate 10 %."""
    return make_endpoint(team, "fraud", [(version, 90, "primary"), (candidate, 10, "candidate")])


@pytest.fixture
def other_endpoint(other_team):
    """A live endpoint of another team."""
    other_version = make_version(other_team, "secret-model", 1)
    return make_endpoint(other_team, "secret", [(other_version, 100, "primary")])
