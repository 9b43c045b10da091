"""Rollback policies: validation, evaluation from minute rollups, rollbacks that name their
evaluation, dry runs, pauses, and canary steps gated by the policy."""

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.actor import Actor
from accounts.models import AuditEvent
from common.errors import ApplicationError
from deployments import services as deployment_services
from deployments.models import EndpointStatus, Release
from monitoring import services
from monitoring.models import EvaluationAction, EvaluationOutcome, PolicyEvaluation, RollbackPolicy
from tests.monitoring.conftest import make_endpoint, make_version, seed_point

pytestmark = pytest.mark.django_db

ERRORS = {"metric": "error_rate", "threshold": 0.05, "window_minutes": 5, "minimum_samples": 50}


def live(endpoint, release, seconds_ago=120):
    Release.objects.filter(pk=release.pk).update(
        live_at=timezone.now() - timedelta(seconds=seconds_ago)
    )
    endpoint.status = EndpointStatus.LIVE
    endpoint.live_release = release
    endpoint.save(update_fields=["status", "live_release"])
    endpoint.refresh_from_db()


@pytest.fixture
def canary(team, deployer, make_actor):
    """iris:1 served alone (release 1), then iris:2 as a 20 % canary (release 2), both live."""
    first, second = make_version(team, "iris", 1), make_version(team, "iris", 2)
    endpoint = make_endpoint(team, "guarded", [(first, 100, "primary")])
    live(endpoint, endpoint.desired_release, seconds_ago=3600)
    release = deployment_services.endpoint_deploy(
        actor=make_actor(deployer),
        endpoint=endpoint,
        version="iris:2",
        strategy=[{"weight": 20, "bake_seconds": 600}, {"weight": 100, "bake_seconds": 0}],
    )
    live(endpoint, release)
    return endpoint, first, second


def set_policy(endpoint, actor, **fields):
    return services.rollback_policy_set(
        actor=actor, endpoint=endpoint, **{"criteria": [ERRORS], **fields}
    )


def seed(endpoint, version, requests, errors, minutes_ago=0):
    minute = (timezone.now() - timedelta(minutes=minutes_ago)).replace(second=0, microsecond=0)
    seed_point(endpoint, version, minute, requests=requests, server_errors=errors)


def test_a_failing_canary_is_rolled_back_and_the_release_names_the_evaluation(
    canary, deployer, make_actor
):
    endpoint, first, second = canary
    set_policy(endpoint, make_actor(deployer))
    seed(endpoint, first, 400, 0)
    seed(endpoint, second, 100, 20)
    evaluation = services.rollback_policy_evaluate(endpoint_id=endpoint.pk, converge=False)
    assert evaluation.outcome == EvaluationOutcome.FAILED
    assert evaluation.action == EvaluationAction.ROLLED_BACK
    assert evaluation.version_id == second.pk
    assert evaluation.results[0]["value"] == pytest.approx(0.2)
    endpoint.refresh_from_db()
    rollback = endpoint.desired_release
    assert rollback.number == 3 == evaluation.rollback_release_number
    assert rollback.reason == "rollback"
    assert rollback.restores.number == 1
    assert f"Guardrail evaluation {evaluation.pk}" in rollback.note
    assert [v["version"] for v in rollback.variants] == ["iris:1"]
    assert (
        AuditEvent.objects.filter(
            action="endpoint.rollback", actor_label="system:guardrail"
        ).count()
        == 1
    )


def test_a_passing_canary_advances_only_after_an_evaluation_passed(canary, deployer, make_actor):
    endpoint, _first, second = canary
    set_policy(endpoint, make_actor(deployer))
    Release.objects.filter(pk=endpoint.desired_release_id).update(
        live_at=timezone.now() - timedelta(seconds=601)
    )
    # Baked, but not yet evaluated: the step holds.
    assert deployment_services.endpoint_advance_rollout(endpoint_id=endpoint.pk) is None
    seed(endpoint, second, 100, 1)
    evaluation = services.rollback_policy_evaluate(endpoint_id=endpoint.pk, converge=False)
    assert evaluation.outcome == EvaluationOutcome.PASSED
    advanced = deployment_services.endpoint_advance_rollout(endpoint_id=endpoint.pk)
    assert advanced is not None and advanced.reason == "rollout_step"
    assert [(v["version"], v["weight"]) for v in advanced.variants] == [("iris:2", 100)]


def test_inconclusive_after_the_bake_pauses_and_holds_the_rollout(canary, deployer, make_actor):
    endpoint, _first, second = canary
    set_policy(endpoint, make_actor(deployer), on_inconclusive="pause")
    Release.objects.filter(pk=endpoint.desired_release_id).update(
        live_at=timezone.now() - timedelta(seconds=601)
    )
    seed(endpoint, second, 10, 0)  # below the 50 samples needed
    evaluation = services.rollback_policy_evaluate(endpoint_id=endpoint.pk, converge=False)
    assert (evaluation.outcome, evaluation.action) == ("inconclusive", "paused")
    assert deployment_services.endpoint_advance_rollout(endpoint_id=endpoint.pk) is None
    endpoint.refresh_from_db()
    assert endpoint.desired_release.number == 2


def test_inconclusive_can_roll_back_instead(canary, deployer, make_actor):
    endpoint, _first, _second = canary
    set_policy(endpoint, make_actor(deployer), on_inconclusive="rollback")
    Release.objects.filter(pk=endpoint.desired_release_id).update(
        live_at=timezone.now() - timedelta(seconds=601)
    )
    evaluation = services.rollback_policy_evaluate(endpoint_id=endpoint.pk, converge=False)
    assert evaluation.action == EvaluationAction.ROLLED_BACK


def test_dry_run_records_what_it_would_do_and_changes_nothing(canary, deployer, make_actor):
    endpoint, _first, second = canary
    set_policy(endpoint, make_actor(deployer), dry_run=True)
    seed(endpoint, second, 100, 30)
    evaluation = services.rollback_policy_evaluate(endpoint_id=endpoint.pk, converge=False)
    assert evaluation.action == EvaluationAction.WOULD_ROLL_BACK
    assert "would roll back to release 1" in evaluation.message
    endpoint.refresh_from_db()
    assert endpoint.desired_release.number == 2


def test_failure_limit_needs_consecutive_failures(canary, deployer, make_actor):
    endpoint, _first, second = canary
    set_policy(endpoint, make_actor(deployer), failure_limit=2)
    seed(endpoint, second, 100, 30)
    first_look = services.rollback_policy_evaluate(endpoint_id=endpoint.pk, converge=False)
    assert (first_look.outcome, first_look.action) == ("failed", "none")
    second_look = services.rollback_policy_evaluate(endpoint_id=endpoint.pk, converge=False)
    assert second_look.action == EvaluationAction.ROLLED_BACK
    assert PolicyEvaluation.objects.filter(endpoint=endpoint).count() == 2


def test_relative_to_control_compares_with_the_primary_in_the_same_window(
    canary, deployer, make_actor
):
    endpoint, first, second = canary
    criterion = {**ERRORS, "threshold": 2.0, "relative_to_control": True}
    set_policy(endpoint, make_actor(deployer), criteria=[criterion])
    seed(endpoint, first, 400, 40)  # control at 10 %
    seed(endpoint, second, 100, 15)  # canary at 15 %: below 2 × 10 %
    evaluation = services.rollback_policy_evaluate(endpoint_id=endpoint.pk, converge=False)
    assert evaluation.outcome == EvaluationOutcome.PASSED
    assert evaluation.results[0]["limit"] == pytest.approx(0.2)


def test_always_on_policy_rolls_back_a_promoted_version_that_degrades(canary, deployer, make_actor):
    endpoint, _first, second = canary
    actor = make_actor(deployer)
    promoted = deployment_services.endpoint_promote(actor=actor, endpoint=endpoint)
    live(endpoint, promoted, seconds_ago=60)
    set_policy(endpoint, actor, scope="always")
    seed(endpoint, second, 200, 50)
    evaluation = services.rollback_policy_evaluate(endpoint_id=endpoint.pk, converge=False)
    assert evaluation.action == EvaluationAction.ROLLED_BACK
    endpoint.refresh_from_db()
    assert endpoint.desired_release.restores.number == 1


def test_rollouts_only_policy_ignores_a_release_without_a_candidate(canary, deployer, make_actor):
    endpoint, _first, second = canary
    actor = make_actor(deployer)
    promoted = deployment_services.endpoint_promote(actor=actor, endpoint=endpoint)
    live(endpoint, promoted)
    set_policy(endpoint, actor, scope="rollouts")
    seed(endpoint, second, 200, 50)
    assert services.rollback_policy_evaluate(endpoint_id=endpoint.pk, converge=False) is None


def test_data_from_before_the_release_went_live_is_not_judged(canary, deployer, make_actor):
    endpoint, _first, second = canary
    set_policy(endpoint, make_actor(deployer))
    seed(endpoint, second, 100, 50, minutes_ago=4)  # older than the release (live 2 min ago)
    evaluation = services.rollback_policy_evaluate(endpoint_id=endpoint.pk, converge=False)
    assert evaluation.outcome == EvaluationOutcome.INCONCLUSIVE


@pytest.mark.parametrize(
    "fields",
    [
        {"criteria": []},
        {"criteria": [{"metric": "mood", "threshold": 1}]},
        {"criteria": [{**ERRORS, "threshold": -1}]},
        {"criteria": [{**ERRORS, "window_minutes": 0}]},
        {"criteria": [{**ERRORS, "comparator": "ge"}]},
        {"criteria": [{**ERRORS, "surprise": 1}]},
        {"failure_limit": 0},
        {"on_inconclusive": "panic"},
        {"scope": "sometimes"},
        {"dry_run": "yes"},
    ],
)
def test_bad_policies_are_refused_and_nothing_is_written(canary, deployer, make_actor, fields):
    endpoint, _, _ = canary
    with pytest.raises(ApplicationError):
        set_policy(endpoint, make_actor(deployer), **fields)
    assert not RollbackPolicy.objects.exists()


def test_policy_api_access(canary, deployer_api, viewer_api, outsider_api):
    endpoint, _, _ = canary
    url = f"/api/v1/endpoints/{endpoint.name}/rollback-policy/"
    body = {"criteria": [ERRORS], "scope": "always"}
    assert outsider_api.put(url, body, format="json").status_code == 404
    assert viewer_api.put(url, body, format="json").status_code == 403
    assert not RollbackPolicy.objects.exists()
    assert viewer_api.get(url).status_code == 404
    response = deployer_api.put(url, body, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["criteria"][0]["comparator"] == "gt"
    assert viewer_api.get(url).json()["scope"] == "always"
    bad = deployer_api.put(url, {"criteria": "all"}, format="json")
    assert bad.status_code == 400
    assert viewer_api.get(url + "evaluations/").json() == {"evaluations": []}


def test_system_actor_rollback_is_the_same_service(canary):
    endpoint, _, _ = canary
    release = deployment_services.endpoint_rollback(
        actor=Actor.system("guardrail"), endpoint=endpoint, release_number=1
    )
    assert release.reason == "rollback"


def test_a_guardrail_rolls_back_a_forced_breaking_version_despite_the_signature_change(
    canary, deployer, make_actor
):
    from registry.models import ModelVersion

    endpoint, first, second = canary
    tensor = {"datatype": "FP32", "shape": [-1, 4]}
    outputs = [{"name": "label", "datatype": "INT64", "shape": [-1]}]
    ModelVersion.objects.filter(pk=first.pk).update(
        signature={"inputs": [{"name": "x", **tensor}], "outputs": outputs}
    )
    ModelVersion.objects.filter(pk=second.pk).update(
        signature={"inputs": [{"name": "features", **tensor}], "outputs": outputs}
    )
    actor = make_actor(deployer)
    with pytest.raises(ApplicationError, match="iris:2 does not fit"):
        deployment_services.endpoint_promote(actor=actor, endpoint=endpoint)
    promoted = deployment_services.endpoint_promote(actor=actor, endpoint=endpoint, force=True)
    live(endpoint, promoted, seconds_ago=60)
    set_policy(endpoint, actor, scope="always")
    seed(endpoint, second, 200, 50)
    evaluation = services.rollback_policy_evaluate(endpoint_id=endpoint.pk, converge=False)
    assert evaluation.action == EvaluationAction.ROLLED_BACK, evaluation.message
    endpoint.refresh_from_db()
    assert [v["version"] for v in endpoint.desired_release.variants] == ["iris:1"]
    audit = AuditEvent.objects.filter(action="endpoint.rollback").latest("id")
    assert (audit.actor_label, audit.data["forced"]) == ("system:guardrail", True)
