"""Rollback policies: guardrail criteria evaluated every minute (and before every canary step),
each evaluation kept, and a breach rolled back through the same service a person would use.

The rollback path needs only the database and the gateway: the evaluation writes the rollback
release itself and then converges the endpoint inline (`converge=True`), so a broker outage does
not keep a bad version serving. The reconciler's usual on-commit enqueue still happens and is
harmless when the broker is away.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from accounts.actor import Actor
from accounts.models import Role
from accounts.permissions import require_role
from accounts.services import audit_record
from common.errors import ApplicationError
from deployments import services as deployment_services
from deployments.models import Endpoint, EndpointStatus, Release, ReleaseReason, VariantRole
from monitoring.guardrails import measure
from monitoring.models import (
    Comparator,
    EvaluationAction,
    EvaluationOutcome,
    Inconclusive,
    PolicyEvaluation,
    PolicyMetric,
    PolicyScope,
    RollbackPolicy,
)

logger = logging.getLogger(__name__)

MAX_CRITERIA = 10
MAX_WINDOW_MINUTES = 24 * 60
MAX_MINIMUM_SAMPLES = 1_000_000
CRITERION_KEYS = {
    "metric",
    "comparator",
    "threshold",
    "relative_to_control",
    "window_minutes",
    "minimum_samples",
}
# The comparator a criterion uses when none is given: more errors or latency is bad, less
# accuracy is bad.
DEFAULT_COMPARATOR = {
    PolicyMetric.ERROR_RATE: Comparator.ABOVE,
    PolicyMetric.LATENCY_P95: Comparator.ABOVE,
    PolicyMetric.ACCURACY: Comparator.BELOW,
}


# --- the policy -------------------------------------------------------------------------------


def _check_criterion(position: int, entry: Any) -> dict[str, Any]:
    where = {"criteria": position}
    if not isinstance(entry, dict) or not set(entry) <= CRITERION_KEYS:
        raise ApplicationError(
            f"criterion {position} must be an object with {', '.join(sorted(CRITERION_KEYS))}.",
            where,
        )
    metric = entry.get("metric")
    if metric not in PolicyMetric.values:
        raise ApplicationError(
            f"criterion {position} metric must be one of {', '.join(PolicyMetric.values)}.", where
        )
    comparator = entry.get("comparator", DEFAULT_COMPARATOR[PolicyMetric(metric)])
    if comparator not in Comparator.values:
        raise ApplicationError(f"criterion {position} comparator must be gt or lt.", where)
    threshold = entry.get("threshold")
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not math.isfinite(threshold)
        or not 0 <= threshold <= 1e6
    ):
        raise ApplicationError(f"criterion {position} threshold must be a number 0-1e6.", where)
    relative = entry.get("relative_to_control", False)
    if not isinstance(relative, bool):
        raise ApplicationError(f"criterion {position} relative_to_control is true or false.", where)
    window = entry.get("window_minutes", 5)
    if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= 1440:
        raise ApplicationError(f"criterion {position} window_minutes must be 1-1440.", where)
    minimum = entry.get("minimum_samples", 100)
    if (
        isinstance(minimum, bool)
        or not isinstance(minimum, int)
        or not 1 <= minimum <= MAX_MINIMUM_SAMPLES
    ):
        raise ApplicationError(
            f"criterion {position} minimum_samples must be 1-{MAX_MINIMUM_SAMPLES}.", where
        )
    return {
        "metric": metric,
        "comparator": comparator,
        "threshold": float(threshold),
        "relative_to_control": relative,
        "window_minutes": window,
        "minimum_samples": minimum,
    }


def _choice(value: Any, choices, what: str) -> str:
    if value not in choices.values:
        raise ApplicationError(f"{what} must be one of {', '.join(choices.values)}.", {what: value})
    return value


@transaction.atomic
def rollback_policy_set(
    *,
    actor: Actor,
    endpoint: Endpoint,
    criteria: Any,
    failure_limit: Any = 1,
    on_inconclusive: Any = Inconclusive.PAUSE,
    scope: Any = PolicyScope.ALWAYS,
    dry_run: Any = False,
    is_enabled: Any = True,
) -> RollbackPolicy:
    """Create or replace an endpoint's rollback policy (deployers and admins)."""
    require_role(actor, endpoint.team_id, Role.DEPLOYER)
    if not isinstance(criteria, list) or not 1 <= len(criteria) <= MAX_CRITERIA:
        raise ApplicationError(
            f"criteria must be a list of 1 to {MAX_CRITERIA} criteria.", {"criteria": "list"}
        )
    checked = [_check_criterion(position, entry) for position, entry in enumerate(criteria, 1)]
    if isinstance(failure_limit, bool) or not isinstance(failure_limit, int):
        raise ApplicationError("failure_limit must be a whole number 1-100.", {})
    if not 1 <= failure_limit <= 100:
        raise ApplicationError("failure_limit must be a whole number 1-100.", {})
    if not isinstance(dry_run, bool) or not isinstance(is_enabled, bool):
        raise ApplicationError("dry_run and is_enabled are true or false.", {})
    policy, created = RollbackPolicy.objects.update_or_create(
        endpoint=endpoint,
        defaults={
            "criteria": checked,
            "failure_limit": failure_limit,
            "on_inconclusive": _choice(on_inconclusive, Inconclusive, "on_inconclusive"),
            "scope": _choice(scope, PolicyScope, "scope"),
            "dry_run": dry_run,
            "is_enabled": is_enabled,
            "consecutive_failures": 0,
        },
        create_defaults={
            "criteria": checked,
            "failure_limit": failure_limit,
            "on_inconclusive": on_inconclusive,
            "scope": scope,
            "dry_run": dry_run,
            "is_enabled": is_enabled,
            "created_by": actor.user,
        },
    )
    audit_record(
        actor=actor,
        action="rollback_policy.create" if created else "rollback_policy.update",
        target=endpoint,
        team=endpoint.team_id,
        data={
            "criteria": checked,
            "failure_limit": failure_limit,
            "on_inconclusive": on_inconclusive,
            "scope": scope,
            "dry_run": dry_run,
            "is_enabled": is_enabled,
        },
    )
    return policy


@transaction.atomic
def rollback_policy_delete(*, actor: Actor, endpoint: Endpoint) -> None:
    """Remove an endpoint's rollback policy (its evaluations go with it)."""
    require_role(actor, endpoint.team_id, Role.DEPLOYER)
    deleted, _ = RollbackPolicy.objects.filter(endpoint=endpoint).delete()
    if not deleted:
        raise ApplicationError("This endpoint has no rollback policy.", {}, status=404)
    audit_record(
        actor=actor, action="rollback_policy.delete", target=endpoint, team=endpoint.team_id
    )


def _subject(release: Release, scope: str) -> tuple[dict | None, dict | None]:
    """The variant under evaluation and its control: the candidate against the primary during a
    rollout; the primary alone otherwise (only when the policy is always on)."""
    live = [v for v in release.variants if v["role"] != VariantRole.SHADOW]
    candidate = next((v for v in live if v["role"] == VariantRole.CANDIDATE), None)
    primary = next((v for v in live if v["role"] == VariantRole.PRIMARY), None)
    if candidate is not None:
        return candidate, primary
    if scope == PolicyScope.ALWAYS:
        return primary, None
    return None, None


def _judge(criterion: dict, value: float | None, limit: float | None) -> bool:
    if criterion["comparator"] == Comparator.ABOVE:
        return value > limit
    return value < limit


def _criterion_result(
    criterion: dict,
    *,
    endpoint_id: int,
    subject: dict,
    control: dict | None,
    now: datetime,
    start: datetime,
) -> dict[str, Any]:
    window_start = max(start, now - timedelta(minutes=criterion["window_minutes"]))
    value, samples = measure(
        endpoint_id=endpoint_id,
        version_id=subject["version_id"],
        metric=criterion["metric"],
        start=window_start,
        end=now,
    )
    result = {
        "metric": criterion["metric"],
        "comparator": criterion["comparator"],
        "threshold": criterion["threshold"],
        "relative_to_control": criterion["relative_to_control"],
        "value": value,
        "samples": samples,
        "control_value": None,
        "control_samples": None,
        "limit": criterion["threshold"],
    }
    minimum = criterion["minimum_samples"]
    if value is None or samples < minimum:
        result["outcome"] = EvaluationOutcome.INCONCLUSIVE
        result["message"] = f"{samples} of the {minimum} samples needed"
        return result
    if criterion["relative_to_control"]:
        if control is None:
            result["outcome"] = EvaluationOutcome.INCONCLUSIVE
            result["message"] = "no control version serves alongside to compare with"
            return result
        control_value, control_samples = measure(
            endpoint_id=endpoint_id,
            version_id=control["version_id"],
            metric=criterion["metric"],
            start=window_start,
            end=now,
        )
        result["control_value"], result["control_samples"] = control_value, control_samples
        if control_value is None or control_samples < minimum:
            result["outcome"] = EvaluationOutcome.INCONCLUSIVE
            result["message"] = f"the control has {control_samples} of {minimum} samples"
            return result
        result["limit"] = control_value * criterion["threshold"]
    failed = _judge(criterion, value, result["limit"])
    result["outcome"] = EvaluationOutcome.FAILED if failed else EvaluationOutcome.PASSED
    word = "above" if criterion["comparator"] == Comparator.ABOVE else "below"
    result["message"] = (
        f"{criterion['metric']} {value:.4g} is {'' if failed else 'not '}{word} "
        f"{result['limit']:.4g} ({samples} samples)"
    )
    return result


def _rollback_target(endpoint: Endpoint, release: Release, version_id: int) -> Release | None:
    """The newest earlier live release in which the version under evaluation did not serve."""
    earlier = endpoint.releases.filter(number__lt=release.number, live_at__isnull=False).exclude(
        reason=ReleaseReason.STOP
    )
    for candidate in earlier.order_by("-number")[:50]:
        serving = {v["version_id"] for v in candidate.variants if v["role"] != VariantRole.SHADOW}
        if version_id not in serving:
            return candidate
    return None


def _bake_elapsed(release: Release, now: datetime) -> bool:
    if len(release.strategy) < 2 or release.live_at is None:
        return False
    return (now - release.live_at).total_seconds() >= release.strategy[0]["bake_seconds"]


@transaction.atomic
def _evaluate(*, endpoint_id: int, now: datetime) -> PolicyEvaluation | None:
    policy = (
        RollbackPolicy.objects.select_for_update()
        .filter(endpoint_id=endpoint_id, is_enabled=True)
        .first()
    )
    if policy is None:
        return None
    endpoint = Endpoint.objects.select_related("desired_release", "target", "team").get(
        pk=endpoint_id
    )
    release = endpoint.desired_release
    # Only a release that has gone live is judged, and only on what it served since then.
    if release is None or release.is_stop or release.live_at is None:
        return None
    if endpoint.status not in (EndpointStatus.LIVE, EndpointStatus.DEGRADED):
        return None
    subject, control = _subject(release, policy.scope)
    if subject is None:
        return None
    results = [
        _criterion_result(
            criterion,
            endpoint_id=endpoint.pk,
            subject=subject,
            control=control,
            now=now,
            start=release.live_at,
        )
        for criterion in policy.criteria
    ]
    outcomes = {result["outcome"] for result in results}
    if EvaluationOutcome.FAILED in outcomes:
        outcome = EvaluationOutcome.FAILED
        policy.consecutive_failures += 1
    elif EvaluationOutcome.INCONCLUSIVE in outcomes:
        outcome = EvaluationOutcome.INCONCLUSIVE
    else:
        outcome = EvaluationOutcome.PASSED
        policy.consecutive_failures = 0
    message = "; ".join(result["message"] for result in results if result["outcome"] == outcome)[
        :900
    ]
    evaluation = PolicyEvaluation.objects.create(
        policy=policy,
        endpoint=endpoint,
        created_at=now,
        release_number=release.number,
        version_id=subject["version_id"],
        outcome=outcome,
        results=results,
        message=message,
    )
    wants_rollback = False
    if outcome == EvaluationOutcome.FAILED:
        wants_rollback = policy.consecutive_failures >= policy.failure_limit
    elif outcome == EvaluationOutcome.INCONCLUSIVE and _bake_elapsed(release, now):
        # The step has baked but the evidence is missing: hold, give up, or go on.
        if policy.on_inconclusive == Inconclusive.PAUSE:
            evaluation.action = EvaluationAction.PAUSED
        elif policy.on_inconclusive == Inconclusive.ROLLBACK:
            wants_rollback = True
    if wants_rollback:
        _act(policy, evaluation, endpoint, release, subject)
    policy.last_evaluated_at = now
    policy.save(update_fields=["consecutive_failures", "last_evaluated_at", "updated_at"])
    evaluation.save(update_fields=["action", "message", "rollback_release_number"])
    return evaluation


def _act(
    policy: RollbackPolicy,
    evaluation: PolicyEvaluation,
    endpoint: Endpoint,
    release: Release,
    subject: dict,
) -> None:
    """Roll back (or, in dry-run mode, record that it would have)."""
    target = _rollback_target(endpoint, release, subject["version_id"])
    if target is None:
        evaluation.action = EvaluationAction.ROLLBACK_FAILED
        evaluation.message = (
            f"{evaluation.message}; no earlier live release without {subject['version']}"
        )[:1000]
        return
    if policy.dry_run:
        evaluation.action = EvaluationAction.WOULD_ROLL_BACK
        evaluation.message = (
            f"{evaluation.message}; dry run: would roll back to release {target.number}"
        )[:1000]
        return
    note = (
        f"Guardrail evaluation {evaluation.pk} failed for {subject['version']}: "
        f"{evaluation.message}"
    )[:500]
    try:
        with transaction.atomic():
            rollback = deployment_services.endpoint_rollback(
                actor=Actor.system("guardrail"),
                endpoint=endpoint,
                release_number=target.number,
                note=note,
                # Going back to what served healthily before outranks the signature check (a
                # forced breaking deploy is what may be failing); the audit row records it.
                force=True,
            )
    except ApplicationError as error:
        evaluation.action = EvaluationAction.ROLLBACK_FAILED
        evaluation.message = f"{evaluation.message}; rollback refused: {error.message}"[:1000]
        return
    evaluation.action = EvaluationAction.ROLLED_BACK
    evaluation.rollback_release_number = rollback.number
    policy.consecutive_failures = 0


def rollback_policy_evaluate(
    *, endpoint_id: int, now: datetime | None = None, converge: bool = True
) -> PolicyEvaluation | None:
    """Evaluate an endpoint's policy once; after a rollback, converge the endpoint right here
    (database + gateway only), without waiting for a worker or the broker."""
    evaluation = _evaluate(endpoint_id=endpoint_id, now=now or timezone.now())
    if converge and evaluation is not None and evaluation.action == EvaluationAction.ROLLED_BACK:
        from deployments import reconciler

        try:
            reconciler.reconcile_endpoint(endpoint_id=endpoint_id)
        except Exception:  # the reconciler heals on its next run; the release is written
            logger.exception("inline reconcile after the rollback of %s failed", endpoint_id)
    return evaluation


def rollback_policies_evaluate_all(
    *, now: datetime | None = None, endpoint_ids: list[int] | None = None
) -> list[PolicyEvaluation]:
    """Evaluate every enabled policy (beat, every minute); one failure does not stop the rest."""
    policies = RollbackPolicy.objects.filter(is_enabled=True)
    if endpoint_ids is not None:
        policies = policies.filter(endpoint_id__in=endpoint_ids)
    evaluations = []
    for endpoint_id in policies.values_list("endpoint_id", flat=True):
        try:
            evaluation = rollback_policy_evaluate(endpoint_id=endpoint_id, now=now)
        except Exception:
            logger.exception("rollback policy evaluation of endpoint %s failed", endpoint_id)
            continue
        if evaluation is not None:
            evaluations.append(evaluation)
    return evaluations
