"""Heartbeats: a device's reported state and its metric summaries."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from common.errors import ApplicationError
from common.retry import retry_on_deadlock
from deployments.signals import edge_summary_received
from edge.models import (
    DeviceHealth,
    EdgeDevice,
    EdgeRollout,
    RolloutStatus,
)
from edge.services._common import (
    HEALTH_VALUES,
    MAX_BUCKETS,
    MAX_CATEGORIES,
    MAX_FEATURES,
    MAX_SUMMARIES,
    MAX_SUMMARY_AGE,
    _number,
    _text,
    _whole,
)
from edge.services.fleets import fleet_endpoint
from edge.services.rollouts import edge_rollout_advance
from registry.models import ModelVersion


def _check_histogram(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise ApplicationError(f"{what} must be a histogram object.", {what: "object"})
    if "categories" in value:
        categories = value["categories"]
        if set(value) != {"categories"} or not isinstance(categories, dict):
            raise ApplicationError(f"{what} must be {{categories: {{value: count}}}}.", {what: "x"})
        if len(categories) > MAX_CATEGORIES:
            raise ApplicationError(
                f"{what} has more than {MAX_CATEGORIES} categories.", {what: "x"}
            )
        return {
            "categories": {
                _text(key, f"{what} category", 100): _whole(count, f"{what} count")
                for key, count in categories.items()
            }
        }
    bounds, counts = value.get("bounds"), value.get("counts")
    if (
        set(value) != {"bounds", "counts"}
        or not isinstance(bounds, list)
        or not isinstance(counts, list)
        or len(bounds) > MAX_BUCKETS
        or len(counts) != len(bounds) + 1
    ):
        raise ApplicationError(
            f"{what} must be {{bounds: [...], counts: [one more than bounds]}}.", {what: "x"}
        )
    bounds = [_number(bound, f"{what} bound") for bound in bounds]
    if bounds != sorted(set(bounds)):
        raise ApplicationError(f"{what} bounds must rise.", {what: "bounds"})
    return {"bounds": bounds, "counts": [_whole(count, f"{what} count") for count in counts]}


def _check_summary(entry: Any, position: int) -> dict:
    what = f"summaries[{position}]"
    if not isinstance(entry, dict):
        raise ApplicationError(f"{what} must be an object.", {"summaries": position})
    at = parse_datetime(_text(entry.get("at"), f"{what}.at", 40, blank=False))
    if at is None or at.tzinfo is None:
        raise ApplicationError(f"{what}.at must be an ISO-8601 time with a zone.", {"at": position})
    summary = {
        "sequence": _whole(entry.get("sequence"), f"{what}.sequence", low=1),
        "at": at,
        "version": _text(entry.get("version"), f"{what}.version", 100, blank=False),
    }
    for name in ("requests", "successes", "client_errors", "server_errors", "rows"):
        summary[name] = _whole(entry.get(name, 0), f"{what}.{name}")
    for name in ("latency_sum", "inference_sum"):
        summary[name] = _number(entry.get(name, 0.0), f"{what}.{name}")
    for name in ("latency", "inference", "prediction"):
        raw = entry.get(name) or {}
        summary[name] = _check_histogram(raw, f"{what}.{name}") if raw else {}
    features = entry.get("features") or {}
    if not isinstance(features, dict) or len(features) > MAX_FEATURES:
        raise ApplicationError(
            f"{what}.features must map at most {MAX_FEATURES} names to histograms.",
            {"features": position},
        )
    summary["features"] = {
        _text(name, f"{what} feature name", 100, blank=False): _check_histogram(
            histogram, f"{what}.features.{str(name)[:40]}"
        )
        for name, histogram in features.items()
    }
    return summary


def check_heartbeat(payload: Any) -> dict:
    """A heartbeat body, validated and bounded; a readable 400 for anything else."""
    if not isinstance(payload, dict):
        raise ApplicationError("A heartbeat is a JSON object.", {"body": "object"})
    state = payload.get("state")
    if not isinstance(state, dict):
        raise ApplicationError("state must be an object.", {"state": "object"})
    health = state.get("health", DeviceHealth.UNKNOWN)
    if health not in HEALTH_VALUES:
        raise ApplicationError(
            f"state.health must be one of {', '.join(sorted(HEALTH_VALUES))}.", {"health": "x"}
        )
    checked = {
        "agent_version": _text(payload.get("agent_version"), "agent_version", 40),
        "current_version": _text(state.get("current_version"), "state.current_version", 100),
        "previous_version": _text(state.get("previous_version"), "state.previous_version", 100),
        "staged_version": _text(state.get("staged_version"), "state.staged_version", 100),
        "applied_sequence": _whole(state.get("applied_sequence", 0), "state.applied_sequence"),
        "failed_sequence": _whole(state.get("failed_sequence", 0), "state.failed_sequence"),
        "failed_version": _text(state.get("failed_version"), "state.failed_version", 100),
        "health": health,
        "status_reason": _text(state.get("reason"), "state.reason", 1000),
    }
    summaries = payload.get("summaries", [])
    if not isinstance(summaries, list) or len(summaries) > MAX_SUMMARIES:
        raise ApplicationError(
            f"summaries must be a list of at most {MAX_SUMMARIES}.", {"summaries": "list"}
        )
    checked["summaries"] = [_check_summary(entry, n) for n, entry in enumerate(summaries)]
    return checked


def _version_by_reference(team_id: int, reference: str) -> int | None:
    model, _, number = reference.rpartition(":")
    if not model or not number.isdigit():
        return None
    return (
        ModelVersion.objects.filter(model__team_id=team_id, model__name=model, number=int(number))
        .values_list("pk", flat=True)
        .first()
    )


@retry_on_deadlock
def device_heartbeat_record(*, device: EdgeDevice, payload: Any) -> dict:
    """Store a device's reported state and its metric summaries (each summary once, by its
    sequence) in one transaction, then move its fleet's rollout on in another (after the
    device row is released, so the two never wait on each other). Returns what was stored.

    Heartbeats are telemetry, not actions: they write no audit rows."""
    heartbeat = check_heartbeat(payload)
    summaries = heartbeat.pop("summaries")
    with transaction.atomic():
        device = (
            EdgeDevice.objects.select_for_update(of=("self",))
            .select_related("target")
            .get(pk=device.pk)
        )
        now = timezone.now()
        stored = _summaries_store(device=device, summaries=summaries, now=now)
        for name, value in heartbeat.items():
            setattr(device, name, value)
        device.last_seen_at = now
        device.save()
    rollout = EdgeRollout.objects.filter(target=device.target, status=RolloutStatus.RUNNING).first()
    if rollout is not None:
        edge_rollout_advance(rollout_id=rollout.pk)
    return {"summaries_stored": stored, "summary_sequence": device.summary_sequence}


def _summaries_store(*, device: EdgeDevice, summaries: list[dict], now: datetime) -> int:
    endpoint = fleet_endpoint(device.target)
    stored = 0
    for summary in sorted(summaries, key=lambda entry: entry["sequence"]):
        if summary["sequence"] <= device.summary_sequence:
            continue  # sent before; its response was lost
        device.summary_sequence = summary["sequence"]
        at = summary["at"]
        if endpoint is None or at > now + timedelta(minutes=5) or at < now - MAX_SUMMARY_AGE:
            continue
        version_id = _version_by_reference(device.target.team_id, summary["version"])
        if version_id is None:
            continue
        # Monitoring stores it (receiver connected in MonitoringConfig.ready()).
        edge_summary_received.send(
            sender=EdgeDevice, endpoint=endpoint, version_id=version_id, summary=summary
        )
        stored += 1
    return stored
