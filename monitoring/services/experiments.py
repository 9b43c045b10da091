"""Writes for A/B experiments: create, start, stop, end on a release, and the sequential looks
that conclude them (and act on the verdict when asked to)."""

from __future__ import annotations

import logging
import math
import re
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from accounts.actor import Actor
from accounts.models import Role
from accounts.permissions import require_role
from accounts.services import audit_record
from common.errors import ApplicationError
from common.validation import number_in_range
from deployments import services as deployment_services
from deployments.models import Endpoint, Release, VariantRole
from events.models import EventKind
from events.services import event_record
from monitoring import sequential
from monitoring.experiments import GUARDRAIL_METRICS, MINIMUM_SAMPLES, arm_summary
from monitoring.models import (
    HIGHER_IS_BETTER,
    Experiment,
    ExperimentMetric,
    ExperimentSnapshot,
    ExperimentStatus,
    ExperimentVerdict,
)
from registry.models import ModelVersion
from registry.selectors import version_resolve

logger = logging.getLogger(__name__)

MAX_GUARDRAILS = 4
STICKY_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_EFFECT = 1e6


def _version(actor: Actor, endpoint: Endpoint, reference: Any, what: str) -> ModelVersion:
    if isinstance(reference, ModelVersion):
        version = reference
    else:
        if not isinstance(reference, str) or not reference.strip():
            raise ApplicationError(f"Name the {what} as 'model:N' or 'model@alias'.", {what: None})
        version = version_resolve(actor=actor, reference=reference.strip())
    if version.model.team_id != endpoint.team_id:
        raise ApplicationError(f"{what} must be a version of this endpoint's team.", {what: None})
    if not version.is_deployable:
        raise ApplicationError(
            f"The {what} {version.reference} is not ready to serve.", {what: None}
        )
    return version


def _number(value: Any, what: str, low: float, high: float) -> float:
    return number_in_range(value, field=what, low=low, high=high, extra={what: value})


def _check_sticky(sticky: Any) -> dict[str, str] | None:
    if sticky in (None, {}, ""):
        return None
    if (
        not isinstance(sticky, dict)
        or len(sticky) != 1
        or next(iter(sticky)) not in ("header", "cookie")
        or not isinstance(next(iter(sticky.values())), str)
        or not STICKY_NAME.fullmatch(next(iter(sticky.values())))
    ):
        raise ApplicationError(
            'sticky must be {"header": NAME} or {"cookie": NAME} (letters, digits, - and _).',
            {"sticky": sticky},
        )
    return dict(sticky)


def _check_guardrails(guardrails: Any) -> list[dict]:
    if guardrails in (None, []):
        return []
    if not isinstance(guardrails, list) or len(guardrails) > MAX_GUARDRAILS:
        raise ApplicationError(
            f"guardrails must be a list of at most {MAX_GUARDRAILS} items.", {"guardrails": "list"}
        )
    checked = []
    for position, entry in enumerate(guardrails, start=1):
        if isinstance(entry, str):
            entry = {"metric": entry}
        if not isinstance(entry, dict) or entry.get("metric") not in GUARDRAIL_METRICS:
            raise ApplicationError(
                f"guardrail {position} must name a metric: {', '.join(sorted(GUARDRAIL_METRICS))}.",
                {"guardrails": position},
            )
        default = 0.01 if entry["metric"] == ExperimentMetric.ERROR_RATE else 0.05
        effect = _number(
            entry.get("minimum_effect", default), f"guardrail {position} minimum_effect", 0, 1e3
        )
        checked.append({"metric": entry["metric"], "minimum_effect": effect})
    return checked


@transaction.atomic
def experiment_create(
    *,
    actor: Actor,
    endpoint: Endpoint,
    name: str,
    control: Any,
    treatment: Any,
    metric: str,
    minimum_effect: Any,
    treatment_percent: Any = 50,
    sticky: Any = None,
    guardrails: Any = None,
    alpha: Any = 0.05,
    power: Any = 0.8,
    planning_variance: Any = None,
    auto_promote: bool = False,
    auto_stop_loser: bool = False,
    description: str = "",
) -> Experiment:
    """A draft experiment, with its planned sample size; nothing changes on the endpoint yet."""
    require_role(actor, endpoint.team_id, Role.DEPLOYER)
    if not isinstance(name, str) or not 0 < len(name.strip()) <= 100:
        raise ApplicationError("name must be 1-100 characters.", {"name": name})
    if metric not in ExperimentMetric.values:
        raise ApplicationError(
            f"metric must be one of {', '.join(ExperimentMetric.values)}.", {"metric": metric}
        )
    control_version = _version(actor, endpoint, control, "control")
    treatment_version = _version(actor, endpoint, treatment, "treatment")
    if control_version.pk == treatment_version.pk:
        raise ApplicationError("control and treatment must be different versions.", {})
    if (
        isinstance(treatment_percent, bool)
        or not isinstance(treatment_percent, int)
        or not 1 <= treatment_percent <= 99
    ):
        raise ApplicationError(
            "treatment_percent must be a whole number from 1 to 99.",
            {"treatment_percent": treatment_percent},
        )
    alpha = _number(alpha, "alpha", 0, 0.5)
    power = _number(power, "power", 0, 1)
    minimum_effect = _number(minimum_effect, "minimum_effect", 0, MAX_EFFECT)
    if planning_variance is None:
        # A rate's variance is at most p(1 − p) = 0.25; for other metrics ask for a number.
        if metric in (ExperimentMetric.ACCURACY, ExperimentMetric.ERROR_RATE):
            planning_variance = 0.25
        else:
            raise ApplicationError(
                "planning_variance (the outcome's expected variance) is needed for this metric.",
                {"planning_variance": None},
            )
    planning_variance = _number(planning_variance, "planning_variance", 0, 1e12)
    experiment = Experiment.objects.create(
        endpoint=endpoint,
        name=name.strip(),
        description=(description or "")[:500],
        control=control_version,
        treatment=treatment_version,
        treatment_percent=treatment_percent,
        sticky=_check_sticky(sticky),
        metric=metric,
        guardrails=_check_guardrails(guardrails),
        alpha=alpha,
        power=power,
        minimum_effect=minimum_effect,
        planning_variance=planning_variance,
        planned_sample_size=sequential.planned_sample_size(
            variance=planning_variance,
            minimum_effect=minimum_effect,
            alpha=alpha,
            power=power,
            treatment_share=treatment_percent / 100,
            minimum_samples=MINIMUM_SAMPLES,
        ),
        auto_promote=bool(auto_promote),
        auto_stop_loser=bool(auto_stop_loser),
        created_by=actor.user,
    )
    audit_record(
        actor=actor,
        action="experiment.create",
        target=experiment,
        team=endpoint.team_id,
        data={
            "endpoint": endpoint.name,
            "control": control_version.reference,
            "treatment": treatment_version.reference,
            "metric": metric,
            "planned_sample_size": experiment.planned_sample_size,
        },
    )
    return experiment


@transaction.atomic
def experiment_start(*, actor: Actor, experiment: Experiment) -> Experiment:
    """Split the endpoint's traffic (control primary, treatment candidate) and start measuring.

    One transaction: the new release and the running state are written together or not at all.
    """
    require_role(actor, experiment.endpoint.team_id, Role.DEPLOYER)
    _lock_endpoint(experiment.endpoint_id)
    experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
    if experiment.status != ExperimentStatus.DRAFT:
        raise ApplicationError(f"This experiment is {experiment.status}, not a draft.", {})
    endpoint = experiment.endpoint
    if Experiment.objects.filter(endpoint=endpoint, status=ExperimentStatus.RUNNING).exists():
        raise ApplicationError("Another experiment is already running on this endpoint.", {})
    current = endpoint.desired_release.variants if endpoint.desired_release else []
    shadows = [
        {"version": v["version"], "role": VariantRole.SHADOW, "mirror_percent": v["mirror_percent"]}
        for v in current
        if v["role"] == VariantRole.SHADOW
        and v["version_id"] not in (experiment.control_id, experiment.treatment_id)
    ]
    variants = [
        {
            "version": experiment.control.reference,
            "weight": 100 - experiment.treatment_percent,
            "role": VariantRole.PRIMARY,
        },
        {
            "version": experiment.treatment.reference,
            "weight": experiment.treatment_percent,
            "role": VariantRole.CANDIDATE,
        },
        *shadows,
    ]
    release = deployment_services.endpoint_set_traffic(
        actor=actor,
        endpoint=endpoint,
        variants=variants,
        sticky=experiment.sticky,
        note=f"Experiment {experiment.name} starts",
    )
    now = timezone.now()
    experiment.status = ExperimentStatus.RUNNING
    experiment.started_at = now
    experiment.save(update_fields=["status", "started_at", "updated_at"])
    audit_record(
        actor=actor,
        action="experiment.start",
        target=experiment,
        team=endpoint.team_id,
        data={"release": release.number},
    )
    return experiment


@transaction.atomic
def experiment_stop(*, actor: Actor, experiment: Experiment) -> Experiment:
    """Stop measuring; the traffic split stays until someone promotes or rolls back."""
    require_role(actor, experiment.endpoint.team_id, Role.DEPLOYER)
    was_running = experiment.status == ExperimentStatus.RUNNING
    updated = Experiment.objects.filter(
        pk=experiment.pk, status__in=[ExperimentStatus.DRAFT, ExperimentStatus.RUNNING]
    ).update(
        status=ExperimentStatus.STOPPED,
        ended_at=timezone.now(),
        ended_reason=f"stopped by {actor.label}"[:300],
        updated_at=timezone.now(),
    )
    if not updated:
        raise ApplicationError("This experiment has already ended.", {})
    experiment.refresh_from_db()
    audit_record(
        actor=actor,
        action="experiment.stop",
        target=experiment,
        team=experiment.endpoint.team_id,
        data={"reason": experiment.ended_reason},
    )
    if was_running:
        _emit_ended(experiment)
    return experiment


def _lock_endpoint(endpoint_id: int) -> None:
    """Lock the endpoint row before any experiment row: the deployment services lock the
    endpoint and then (through `release_written`) its experiments, so every path takes the two
    locks in that order and none can deadlock another."""
    Endpoint.objects.select_for_update(of=("self",)).filter(pk=endpoint_id).first()


def _arms_unchanged(experiment: Experiment, variants: list[dict]) -> bool:
    """Whether a release still serves both arms live at the experiment's split."""
    live = {v["version_id"]: v for v in variants if v["role"] != VariantRole.SHADOW}
    control, treatment = live.get(experiment.control_id), live.get(experiment.treatment_id)
    return (
        control is not None
        and treatment is not None
        and control["weight"] == 100 - experiment.treatment_percent
        and treatment["weight"] == experiment.treatment_percent
    )


def _emit_ended(experiment: Experiment) -> None:
    event_record(
        team=experiment.endpoint.team_id,
        kind=EventKind.EXPERIMENT_ENDED,
        payload={
            "experiment": experiment.pk,
            "name": experiment.name,
            "endpoint": experiment.endpoint.name,
            "control": experiment.control.reference,
            "treatment": experiment.treatment.reference,
            "status": experiment.status,
            "ended_reason": experiment.ended_reason,
            "ended_at": experiment.ended_at,
        },
    )


def experiments_end_for_release(
    *, release: Release, actor: Actor | None, reason_text: str
) -> list[Experiment]:
    """End the endpoint's running experiment when a new release removes or re-weights one of
    its arms ("ended by the rollback to release 3 by alice"); runs inside the release's
    transaction, so the release and the end are written together or not at all."""
    running = Experiment.objects.select_related(
        "endpoint", "control__model", "treatment__model"
    ).filter(endpoint_id=release.endpoint_id, status=ExperimentStatus.RUNNING)
    ended = []
    for experiment in running:
        if _arms_unchanged(experiment, release.variants):
            continue
        now = timezone.now()
        reason = f"ended by {reason_text}"[:300]
        updated = Experiment.objects.filter(
            pk=experiment.pk, status=ExperimentStatus.RUNNING
        ).update(status=ExperimentStatus.STOPPED, ended_at=now, ended_reason=reason, updated_at=now)
        if not updated:
            continue  # concluded by a look meanwhile
        experiment.refresh_from_db()
        audit_record(
            actor=actor or Actor.system("experiment"),
            action="experiment.end",
            target=experiment,
            team=experiment.endpoint.team_id,
            data={"reason": reason, "release": release.number},
        )
        deployment_services.deployment_event_record(
            endpoint=experiment.endpoint,
            release=release,
            message=f"Experiment {experiment.name} {reason}; its outcomes stop counting.",
        )
        _emit_ended(experiment)
        ended.append(experiment)
    return ended


def on_release_written(sender, *, release, previous, actor, reason_text, **kwargs) -> None:
    """Receiver of `deployments.signals.release_written` (connected in MonitoringConfig)."""
    experiments_end_for_release(release=release, actor=actor, reason_text=reason_text)


def _guardrail_results(experiment: Experiment, since: datetime, until: datetime) -> list[dict]:
    results = []
    for guardrail in experiment.guardrails:
        metric = guardrail["metric"]
        control = arm_summary(
            endpoint_id=experiment.endpoint_id,
            version_id=experiment.control_id,
            metric=metric,
            since=since,
            until=until,
        )
        treatment = arm_summary(
            endpoint_id=experiment.endpoint_id,
            version_id=experiment.treatment_id,
            metric=metric,
            since=since,
            until=until,
        )
        look = sequential.evaluate(
            control,
            treatment,
            alpha=experiment.alpha,
            minimum_effect=guardrail["minimum_effect"],
            higher_is_better=HIGHER_IS_BETTER[ExperimentMetric(metric)],
            minimum_samples=MINIMUM_SAMPLES,
        )
        status = "breached" if look.verdict == sequential.WORSE else "ok"
        if look.verdict == sequential.INCONCLUSIVE and min(control.count, treatment.count) < (
            MINIMUM_SAMPLES
        ):
            status = "waiting"
        results.append(
            {
                "metric": metric,
                "status": status,
                "difference": look.difference,
                "lower": _finite_or_none(look.lower),
                "upper": _finite_or_none(look.upper),
                "control": vars(control),
                "treatment": vars(treatment),
            }
        )
    return results


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


@transaction.atomic
def experiment_evaluate(*, experiment_id: int, now: datetime | None = None) -> Experiment | None:
    """One look at a running experiment (beat): snapshot, verdict, and the automatic actions.

    A verdict concludes the experiment; with auto-promotion a better treatment is promoted, with
    auto-stop a worse one (or one breaking a guardrail) loses its traffic to the control.
    """
    endpoint_id = (
        Experiment.objects.filter(pk=experiment_id).values_list("endpoint_id", flat=True).first()
    )
    if endpoint_id is None:
        return None
    _lock_endpoint(endpoint_id)
    experiment = (
        Experiment.objects.select_for_update(of=("self",))
        .select_related("endpoint", "control__model", "treatment__model")
        .filter(pk=experiment_id, status=ExperimentStatus.RUNNING)
        .first()
    )
    if experiment is None:
        return None
    now = now or timezone.now()
    since = experiment.started_at or experiment.created_at
    control = arm_summary(
        endpoint_id=experiment.endpoint_id,
        version_id=experiment.control_id,
        metric=experiment.metric,
        since=since,
        until=now,
    )
    treatment = arm_summary(
        endpoint_id=experiment.endpoint_id,
        version_id=experiment.treatment_id,
        metric=experiment.metric,
        since=since,
        until=now,
    )
    look = sequential.evaluate(
        control,
        treatment,
        alpha=experiment.alpha,
        minimum_effect=experiment.minimum_effect,
        higher_is_better=experiment.higher_is_better,
        minimum_samples=MINIMUM_SAMPLES,
    )
    guardrails = _guardrail_results(experiment, since, now)
    verdict = look.verdict
    if any(guardrail["status"] == "breached" for guardrail in guardrails):
        verdict = sequential.WORSE
    experiment.verdict = verdict
    experiment.lower = _finite_or_none(look.lower)
    experiment.upper = _finite_or_none(look.upper)
    experiment.result = {**look.as_dict(), "guardrails": guardrails}
    experiment.result["lower"] = experiment.lower
    experiment.result["upper"] = experiment.upper
    experiment.last_evaluated_at = now
    fields = ["verdict", "lower", "upper", "result", "last_evaluated_at", "updated_at"]
    ExperimentSnapshot.objects.create(
        experiment=experiment,
        created_at=now,
        control_count=control.count,
        control_mean=control.mean,
        control_variance=control.variance,
        treatment_count=treatment.count,
        treatment_mean=treatment.mean,
        treatment_variance=treatment.variance,
        lower=experiment.lower,
        upper=experiment.upper,
        verdict=verdict,
    )
    if verdict != sequential.INCONCLUSIVE:
        experiment.status = ExperimentStatus.CONCLUDED
        experiment.ended_at = now
        fields += ["status", "ended_at"]
    experiment.save(update_fields=fields)
    if experiment.status == ExperimentStatus.CONCLUDED:
        _conclude(experiment)
    return experiment


def _conclude(experiment: Experiment) -> None:
    """Audit the verdict and act on it when the experiment asks for that."""
    actor = Actor.system("experiment")
    endpoint = experiment.endpoint
    action = "none"
    variants = endpoint.desired_release.variants if endpoint.desired_release else []
    candidate = next((v for v in variants if v["role"] == VariantRole.CANDIDATE), None)
    treatment_is_candidate = candidate is not None and candidate["version_id"] == (
        experiment.treatment_id
    )
    if experiment.verdict == ExperimentVerdict.BETTER and experiment.auto_promote:
        if treatment_is_candidate:
            deployment_services.endpoint_promote(
                actor=actor, endpoint=endpoint, note=f"Experiment {experiment.name}: promoted"
            )
            action = "promoted"
    elif (
        experiment.verdict == ExperimentVerdict.WORSE
        and experiment.auto_stop_loser
        and treatment_is_candidate
    ):
        shadows = [
            {"version": v["version"], "role": v["role"], "mirror_percent": v["mirror_percent"]}
            for v in variants
            if v["role"] == VariantRole.SHADOW
        ]
        deployment_services.endpoint_set_traffic(
            actor=actor,
            endpoint=endpoint,
            variants=[
                {
                    "version": experiment.control.reference,
                    "weight": 100,
                    "role": VariantRole.PRIMARY,
                },
                *shadows,
            ],
            note=f"Experiment {experiment.name}: treatment stopped",
        )
        action = "treatment_stopped"
    audit_record(
        actor=actor,
        action="experiment.conclude",
        target=experiment,
        team=endpoint.team_id,
        data={
            "verdict": experiment.verdict,
            "lower": experiment.lower,
            "upper": experiment.upper,
            "action": action,
        },
    )
    experiment.result["action"] = action
    Experiment.objects.filter(pk=experiment.pk).update(result=experiment.result)


def experiments_evaluate_all(*, now: datetime | None = None) -> int:
    """Look at every running experiment once (beat); one failing must not stop the others."""
    count = 0
    running = Experiment.objects.filter(status=ExperimentStatus.RUNNING)
    for experiment_id in running.values_list("pk", flat=True):
        try:
            if experiment_evaluate(experiment_id=experiment_id, now=now) is not None:
                count += 1
        except Exception:
            logger.exception("evaluation of experiment %s failed", experiment_id)
    return count
