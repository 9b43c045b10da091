"""Canary rollouts: the strategy a deploy walks and the beat step that advances it."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from accounts.actor import Actor
from common.errors import ApplicationError
from deployments import hooks
from deployments.models import (
    Endpoint,
    EndpointStatus,
    Release,
    ReleaseReason,
    VariantRole,
)
from deployments.services._common import _percent
from deployments.services.releases import _release_write

logger = logging.getLogger(__name__)

MAX_STRATEGY_STEPS = 20
MAX_BAKE_SECONDS = 7 * 24 * 3600


def _check_strategy(strategy: Any) -> list[dict]:
    """Canary steps [{weight, bake_seconds}] with strictly rising weights, at most 100.

    The release stores the steps starting with the one it is at: it serves `steps[0].weight`,
    bakes `steps[0].bake_seconds` once live, then the rollout moves on to `steps[1]`.
    """
    if strategy in (None, []):
        return []
    if not isinstance(strategy, list) or len(strategy) > MAX_STRATEGY_STEPS:
        raise ApplicationError(
            f"strategy must be a list of at most {MAX_STRATEGY_STEPS} steps.", {"strategy": "list"}
        )
    steps: list[dict] = []
    for position, step in enumerate(strategy, start=1):
        if not isinstance(step, dict) or set(step) - {"weight", "bake_seconds"}:
            raise ApplicationError(
                f"strategy step {position} must be {{weight, bake_seconds}}.",
                {"strategy": position},
            )
        weight = _percent(step.get("weight"), f"strategy step {position} weight")
        bake = step.get("bake_seconds", 0)
        if isinstance(bake, bool) or not isinstance(bake, int) or not 0 <= bake <= MAX_BAKE_SECONDS:
            raise ApplicationError(
                f"strategy step {position} bake_seconds must be 0 to {MAX_BAKE_SECONDS}.",
                {"strategy": position},
            )
        if steps and weight <= steps[-1]["weight"]:
            raise ApplicationError(
                f"strategy step {position} must raise the weight above {steps[-1]['weight']} %.",
                {"strategy": position},
            )
        steps.append({"weight": weight, "bake_seconds": bake})
    if steps[0]["weight"] >= 100:
        raise ApplicationError("A strategy starts below 100 %.", {"strategy": 1})
    return steps


@transaction.atomic
def endpoint_advance_rollout(*, endpoint_id: int) -> Release | None:
    """Move a live canary to its next step once the current step has baked (called by beat)."""
    from django.utils import timezone

    endpoint = (
        Endpoint.objects.select_for_update(of=("self",))
        .select_related("desired_release", "target")
        .filter(pk=endpoint_id)
        .first()
    )
    if endpoint is None or endpoint.desired_release is None:
        return None
    release = endpoint.desired_release
    if len(release.strategy) < 2 or release.live_at is None:
        return None
    if endpoint.status != EndpointStatus.LIVE:
        return None
    current, following = release.strategy[0], release.strategy[1:]
    if (timezone.now() - release.live_at).total_seconds() < current["bake_seconds"]:
        return None
    allowed, reason = hooks.rollout_step_allowed(endpoint=endpoint, release=release)
    if not allowed:
        logger.info("rollout of endpoint %s holds: %s", endpoint.pk, reason)
        return None
    variants = [dict(v) for v in release.variants]
    candidate = next((v for v in variants if v["role"] == VariantRole.CANDIDATE), None)
    primary = next((v for v in variants if v["role"] == VariantRole.PRIMARY), None)
    if candidate is None or primary is None:
        return None
    weight = following[0]["weight"]
    if weight >= 100:
        shadows = [v for v in variants if v["role"] == VariantRole.SHADOW]
        variants = [{**candidate, "weight": 100, "role": VariantRole.PRIMARY}, *shadows]
        following = []
    else:
        candidate["weight"] = weight
        primary["weight"] = 100 - weight
    return _release_write(
        actor=Actor.system("rollout"),
        endpoint=endpoint,
        reason=ReleaseReason.ROLLOUT_STEP,
        action="endpoint.rollout_step",
        variants=variants,
        strategy=following,
        note=f"Canary step to {weight} %",
        reason_text=f"the canary step to {weight} % of the rollout",
    )
