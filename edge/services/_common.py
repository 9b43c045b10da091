"""What the edge services share: limits, the device actor and the input checks."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from accounts.actor import Actor
from common.errors import ApplicationError
from common.validation import is_finite_number
from deployments.models import (
    Target,
    TargetKind,
)
from edge.models import (
    DeviceHealth,
    EdgeDevice,
)

DEVICE_TOKEN_KIND = "edg"  # noqa: S105 (a token kind prefix, not a secret)
MAX_LABELS = 20
MAX_LABEL_LENGTH = 63
MAX_WAVES = 20
MAX_SUMMARIES = 100
MAX_FEATURES = 64
MAX_BUCKETS = 64
MAX_CATEGORIES = 200
MAX_COUNT = 10**12
MAX_INTERVAL_SECONDS = 7 * 24 * 3600
# Summaries older than this are dropped: per-minute rows are kept for a week.
MAX_SUMMARY_AGE = timedelta(days=7)
HEALTH_VALUES = {choice.value for choice in DeviceHealth}


def _device_actor(device: EdgeDevice, ip: str | None = None) -> Actor:
    return Actor(user=None, label=f"device {device.target.name}/{device.name}", ip=ip)


# --- validation helpers -----------------------------------------------------------------------


def _whole(value: Any, what: str, *, low: int = 0, high: int = MAX_COUNT) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ApplicationError(
            f"{what} must be a whole number from {low} to {high}.", {what: value}
        )
    return value


def _number(value: Any, what: str) -> float:
    if not is_finite_number(value):
        raise ApplicationError(f"{what} must be a finite number.", {what: str(value)[:40]})
    return float(value)


def _text(value: Any, what: str, limit: int, *, blank: bool = True) -> str:
    if value is None and blank:
        return ""
    if not isinstance(value, str) or len(value) > limit or (not blank and not value):
        raise ApplicationError(
            f"{what} must be text of at most {limit} characters.", {what: "text"}
        )
    return value


def check_labels(labels: Any) -> dict[str, str]:
    """Device labels: at most 20 short `key: value` text pairs."""
    if labels in (None, ""):
        return {}
    if not isinstance(labels, dict) or len(labels) > MAX_LABELS:
        raise ApplicationError(
            f"labels must be an object of at most {MAX_LABELS} text values.", {"labels": "object"}
        )
    for key, value in labels.items():
        if (
            not isinstance(key, str)
            or not isinstance(value, str)
            or not 0 < len(key) <= MAX_LABEL_LENGTH
            or len(value) > MAX_LABEL_LENGTH
        ):
            raise ApplicationError(
                f"Label keys and values are text of 1-{MAX_LABEL_LENGTH} characters.",
                {"labels": str(key)[:40]},
            )
    return dict(labels)


def _require_fleet(target: Target) -> None:
    if target.kind != TargetKind.EDGE:
        raise ApplicationError(f"{target.name} is not an edge fleet.", {"target": target.name})
