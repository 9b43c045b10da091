"""Writes for the prediction log (ingested from gateways, pruned past retention) and for
feedback joined to it by request id."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.actor import Actor
from accounts.models import Role
from accounts.permissions import require_role
from accounts.services import audit_record
from common.errors import ApplicationError
from deployments.models import Endpoint
from monitoring.feedback import input_sample_percent
from monitoring.models import Feedback, PredictionLogConfig, PredictionRecord
from monitoring.scraper import version_resolver

MAX_INGEST_RECORDS = 5000
MAX_FEEDBACK_ITEMS = 1000
MAX_OUTPUT_VALUES = 32
MAX_INPUT_BYTES = 64 * 1024
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
ROLES = {"primary", "candidate", "shadow"}
# Records stamped further from the dashboard's clock than this are refused (a broken clock).
CLOCK_SKEW = timedelta(days=7)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _bad(position: int, message: str) -> ApplicationError:
    return ApplicationError(f"record {position}: {message}", {"record": position})


def _check_record(position: int, entry: Any, now: datetime) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise _bad(position, "must be an object.")
    request_id = entry.get("request_id")
    if not isinstance(request_id, str) or not REQUEST_ID.fullmatch(request_id):
        raise _bad(position, "request_id must be 1-128 letters, digits, '.', '_' or '-'.")
    version = entry.get("version")
    if not isinstance(version, str) or not 0 < len(version) <= 100:
        raise _bad(position, "version must be a 'model:N' label.")
    role = entry.get("role")
    if role not in ROLES:
        raise _bad(position, f"role must be one of {', '.join(sorted(ROLES))}.")
    moment = entry.get("time")
    if not _finite(moment):
        raise _bad(position, "time must be seconds since the epoch.")
    created = datetime.fromtimestamp(moment, tz=UTC)
    if abs(created - now) > CLOCK_SKEW:
        raise _bad(position, "time is more than 7 days from the dashboard's clock.")
    status = entry.get("status")
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise _bad(position, "status must be an HTTP status code.")
    latency = entry.get("latency", 0.0)
    if not _finite(latency) or not 0 <= latency <= 3600:
        raise _bad(position, "latency must be 0-3600 seconds.")
    output = entry.get("output")
    if output is not None and (not isinstance(output, list) or len(output) > MAX_OUTPUT_VALUES):
        raise _bad(position, f"output must be a list of at most {MAX_OUTPUT_VALUES} values.")
    if output is not None and not all(
        isinstance(v, str | bool | None) or _finite(v) for v in output
    ):
        raise _bad(position, "output values must be numbers, text or booleans.")
    predicted_class = entry.get("predicted_class") or ""
    if not isinstance(predicted_class, str) or len(predicted_class) > 100:
        raise _bad(position, "predicted_class must be text of at most 100 characters.")
    predicted_value = entry.get("predicted_value")
    if predicted_value is not None and not _finite(predicted_value):
        raise _bad(position, "predicted_value must be a finite number.")
    inputs = entry.get("inputs")
    if inputs is not None and len(orjson.dumps(inputs)) > MAX_INPUT_BYTES:
        raise _bad(position, f"inputs are larger than {MAX_INPUT_BYTES} bytes.")
    return {
        "request_id": request_id,
        "version_label": version,
        "role": role,
        "created_at": created,
        "status": status,
        "latency_seconds": float(latency),
        "output": output,
        "predicted_class": predicted_class,
        "predicted_value": None if predicted_value is None else float(predicted_value),
        "inputs": inputs,
    }


def prediction_records_ingest(*, endpoint: Endpoint, records: Any) -> dict[str, Any]:
    """Store a gateway's batch of prediction records; re-sent records are ignored.

    Machine data at request rate: no audit row per batch (the gateway's token is its identity).
    The whole batch is checked before anything is written, so a bad record stores nothing.
    """
    if not isinstance(records, list) or len(records) > MAX_INGEST_RECORDS:
        raise ApplicationError(
            f"records must be a list of at most {MAX_INGEST_RECORDS} records.", {"records": "list"}
        )
    now = timezone.now()
    checked = [_check_record(position, entry, now) for position, entry in enumerate(records)]
    resolve = version_resolver(endpoint)
    rows = [
        PredictionRecord(
            endpoint=endpoint,
            version_id=resolve({"version": entry["version_label"]}),
            received_at=now,
            **entry,
        )
        for entry in checked
    ]
    known = set(
        PredictionRecord.objects.filter(
            endpoint=endpoint, request_id__in={row.request_id for row in rows}
        ).values_list("request_id", "version_label")
    )
    # A re-sent batch (the gateway retrying after a lost answer) stores nothing twice.
    PredictionRecord.objects.bulk_create(rows, batch_size=500, ignore_conflicts=True)
    stored = sum(1 for row in rows if (row.request_id, row.version_label) not in known)
    return {
        "received": len(rows),
        "stored": stored,
        "input_sample_percent": input_sample_percent(endpoint),
    }


@transaction.atomic
def prediction_log_configure(
    *, actor: Actor, endpoint: Endpoint, input_sample_percent: Any
) -> PredictionLogConfig:
    """Set the share of requests whose inputs are logged (0-100 %)."""
    require_role(actor, endpoint.team_id, Role.DEPLOYER)
    if not _finite(input_sample_percent) or not 0 <= input_sample_percent <= 100:
        raise ApplicationError(
            "input_sample_percent must be a number from 0 to 100.",
            {"input_sample_percent": input_sample_percent},
        )
    config, _ = PredictionLogConfig.objects.update_or_create(
        endpoint=endpoint, defaults={"input_sample_percent": float(input_sample_percent)}
    )
    audit_record(
        actor=actor,
        action="prediction_log.configure",
        target=endpoint,
        team=endpoint.team_id,
        data={"input_sample_percent": float(input_sample_percent)},
    )
    return config


def prediction_records_prune(*, now: datetime | None = None) -> dict[str, int]:
    """Delete prediction records and feedback past PREDICTION_LOG_RETENTION_DAYS."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.PREDICTION_LOG_RETENTION_DAYS)
    records, _ = PredictionRecord.objects.filter(received_at__lt=cutoff).delete()
    feedback, _ = Feedback.objects.filter(created_at__lt=cutoff).delete()
    return {"records": records, "feedback": feedback}


# --- feedback ---------------------------------------------------------------------------------


def _check_feedback(items: Any) -> list[dict[str, Any]]:
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_FEEDBACK_ITEMS:
        raise ApplicationError(
            f"Send a list of 1 to {MAX_FEEDBACK_ITEMS} items "
            "[{request_id, label}] or [{request_id, value}].",
            {"items": "list"},
        )
    checked: list[dict[str, Any]] = []
    seen: set[str] = set()
    for position, item in enumerate(items):
        where = {"item": position}
        if not isinstance(item, dict) or not set(item) <= {"request_id", "label", "value"}:
            raise ApplicationError(
                f"item {position} must be {{request_id, label}} or {{request_id, value}}.", where
            )
        request_id = item.get("request_id")
        if not isinstance(request_id, str) or not REQUEST_ID.fullmatch(request_id):
            raise ApplicationError(
                f"item {position}: request_id must be 1-128 letters, digits, '.', '_' or '-'.",
                where,
            )
        if request_id in seen:
            raise ApplicationError(
                f"item {position}: request_id {request_id} appears twice.", where
            )
        seen.add(request_id)
        if ("label" in item) == ("value" in item):
            raise ApplicationError(f"item {position} needs exactly one of label or value.", where)
        label, value = item.get("label"), item.get("value")
        if "label" in item:
            if isinstance(label, bool):
                label = "true" if label else "false"
            elif _finite(label):
                label = str(int(label)) if float(label).is_integer() else repr(float(label))
            elif not isinstance(label, str) or not 0 < len(label) <= 100:
                raise ApplicationError(
                    f"item {position}: label must be a number or text of 1-100 characters.", where
                )
        elif not _finite(value):
            raise ApplicationError(f"item {position}: value must be a finite number.", where)
        checked.append(
            {
                "request_id": request_id,
                "label": label if "label" in item else "",
                "value": float(value) if "value" in item else None,
                "numeric_label": float(item["label"]) if _finite(item.get("label")) else None,
            }
        )
    return checked


def _judge(item: dict[str, Any], record: dict[str, Any]) -> tuple[bool | None, float | None]:
    """Whether a label matches the logged class, or how far a number is from the logged value."""
    if not item["label"]:
        return None, None
    if record["predicted_class"]:
        return item["label"] == record["predicted_class"], None
    if record["predicted_value"] is not None and item["numeric_label"] is not None:
        return None, abs(item["numeric_label"] - record["predicted_value"])
    return None, None


@transaction.atomic
def feedback_record(*, actor: Actor, endpoint: Endpoint, items: Any) -> dict[str, Any]:
    """Store labels or rewards by request id, joined to the version that answered each request.

    Unknown request ids (never logged, or not shipped yet) are reported back, not stored; a
    request that already has feedback keeps its first one and is reported as a duplicate.
    """
    require_role(actor, endpoint.team_id, Role.SCIENTIST)
    checked = _check_feedback(items)
    ids = [item["request_id"] for item in checked]
    served = {
        row["request_id"]: row
        for row in PredictionRecord.objects.filter(endpoint=endpoint, request_id__in=ids)
        .exclude(role="shadow")
        .order_by("created_at")
        .values("request_id", "version_id", "predicted_class", "predicted_value")
    }
    unknown = [request_id for request_id in ids if request_id not in served]
    existing = set(
        Feedback.objects.filter(endpoint=endpoint, request_id__in=ids).values_list(
            "request_id", flat=True
        )
    )
    duplicates = [request_id for request_id in ids if request_id in existing]
    rows = []
    for item in checked:
        record = served.get(item["request_id"])
        if record is None or item["request_id"] in existing:
            continue
        correct, error = _judge(item, record)
        rows.append(
            Feedback(
                endpoint=endpoint,
                version_id=record["version_id"],
                request_id=item["request_id"],
                label=item["label"],
                value=item["value"],
                correct=correct,
                error=error,
            )
        )
    try:
        with transaction.atomic():
            Feedback.objects.bulk_create(rows)
        accepted = len(rows)
    except IntegrityError:
        # A concurrent batch stored some of the same requests first: one at a time, so each
        # request is either stored here or reported as a duplicate, exactly.
        accepted = 0
        for row in rows:
            try:
                with transaction.atomic():
                    row.pk = None
                    row.save(force_insert=True)
                accepted += 1
            except IntegrityError:
                duplicates.append(row.request_id)
    audit_record(
        actor=actor,
        action="feedback.record",
        target=endpoint,
        team=endpoint.team_id,
        data={"accepted": accepted, "duplicates": len(duplicates), "unknown": len(unknown)},
    )
    return {"accepted": accepted, "duplicates": duplicates, "unknown": unknown}
