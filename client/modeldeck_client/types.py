"""Typed results of the REST API. Each keeps the whole JSON document in `raw`, because the server
adds fields freely (API.md: add freely, rename nothing) and scripts may want them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Self


class _Document:
    raw: dict[str, Any]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        names = {f.name for f in dataclasses.fields(cls)} - {"raw"}  # type: ignore[arg-type]
        return cls(**{name: data.get(name) for name in names}, raw=data)  # type: ignore[call-arg]


@dataclass(frozen=True)
class Model(_Document):
    """A registered model."""

    name: str
    team: str | None
    description: str | None
    tags: dict[str, str] | None
    latest_version: int | None
    archived: bool | None
    raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class Version(_Document):
    """One version of a model: its validation status, signature, lineage and params."""

    model: str
    number: int
    reference: str
    status: str
    status_reason: str | None
    approval: str | None
    signature: dict[str, Any] | None
    sha256: str | None
    size: int | None
    metrics: dict[str, Any] | None
    params: dict[str, Any] | None
    source: str | None
    git_commit: str | None
    data_reference: str | None
    aliases: list[str] | None
    raw: dict[str, Any] = field(repr=False)

    FINISHED = frozenset({"ready", "invalid", "archived"})

    @property
    def is_finished(self) -> bool:
        """Validation will not change the status any more."""
        return self.status in self.FINISHED


@dataclass(frozen=True)
class Alias(_Document):
    """A named pointer to one version."""

    name: str
    version: int
    protected: bool | None
    raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class Endpoint(_Document):
    """An endpoint: the reconciler's view of it and its current split."""

    name: str
    target: str | None
    status: str
    status_reason: str | None
    url: str | None
    traffic: list[dict[str, Any]] | None
    release: int | None
    live_release: int | None
    raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class Release(_Document):
    """One immutable release of an endpoint."""

    number: int
    reason: str | None
    traffic: list[dict[str, Any]] | None
    restores: int | None
    actor: str | None
    live_at: str | None
    raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class DeploymentEvent(_Document):
    """One line of an endpoint's progress log."""

    id: int
    created_at: str
    level: str
    message: str
    release: int | None
    raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class BatchJob(_Document):
    """A batch scoring job."""

    id: int
    version: str
    status: str
    status_reason: str | None
    progress: int | None
    rows_done: int | None
    rows_total: int | None
    rows_failed: int | None
    errors: list[Any] | None
    raw: dict[str, Any] = field(repr=False)

    FINISHED = frozenset({"succeeded", "failed", "cancelled"})

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED


@dataclass(frozen=True)
class Experiment(_Document):
    """An A/B experiment with its per-arm results and verdict."""

    id: int
    name: str
    endpoint: str
    control: str
    treatment: str
    status: str
    verdict: str | None
    verdict_text: str | None
    confidence_interval: list[float | None] | None
    raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class DeployOutcome:
    """How waiting for a release ended: live, or not, with the events that explain why."""

    endpoint: Endpoint
    release: int
    live: bool
    reason: str
    events: list[DeploymentEvent]
