"""Experiments: planning, the traffic split they start, verdicts from logged outcomes that agree
with the sequential test, guardrails, automatic promotion, and access."""

import time

import numpy as np
import pytest

from accounts.models import AuditEvent
from common.errors import ApplicationError
from monitoring import experiments, sequential, services
from monitoring.models import Experiment, ExperimentSnapshot, Feedback, PredictionRecord
from tests.monitoring.conftest import make_endpoint, make_version

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(team, deployer, make_actor):
    control, treatment = make_version(team, "iris", 1), make_version(team, "iris", 2)
    endpoint = make_endpoint(team, "abtest", [(control, 100, "primary")])
    return endpoint, control, treatment, make_actor(deployer)


def create(endpoint, actor, **fields):
    defaults = {
        "name": "new ranker",
        "control": "iris:1",
        "treatment": "iris:2",
        "metric": "accuracy",
        "minimum_effect": 0.05,
    }
    return services.experiment_create(actor=actor, endpoint=endpoint, **{**defaults, **fields})


def outcomes(endpoint, version, correct: np.ndarray, prefix: str):
    """Logged answers and feedback for one arm: correct[i] says whether answer i was right."""
    now = time.time()
    from datetime import UTC, datetime

    moment = datetime.fromtimestamp(now, tz=UTC)
    PredictionRecord.objects.bulk_create(
        PredictionRecord(
            endpoint=endpoint,
            version=version,
            version_label=version.reference,
            request_id=f"{prefix}{i}",
            role="primary",
            created_at=moment,
            status=200,
            predicted_class="1",
        )
        for i in range(len(correct))
    )
    Feedback.objects.bulk_create(
        Feedback(
            endpoint=endpoint,
            version=version,
            request_id=f"{prefix}{i}",
            label="1",
            correct=bool(flag),
        )
        for i, flag in enumerate(correct)
    )


def test_planned_sample_size_is_where_the_sequential_test_has_the_planned_power(setup):
    endpoint, _, _, actor = setup
    experiment = create(endpoint, actor)
    # Not the fixed-horizon 1 570: the always-valid test needs 3 043 per arm for 80 % power.
    assert (
        experiment.planned_sample_size
        == 3043
        == sequential.planned_sample_size(variance=0.25, minimum_effect=0.05, alpha=0.05, power=0.8)
    )
    uneven = create(endpoint, actor, name="uneven", treatment_percent=20)
    assert uneven.planned_sample_size == 1902
    assert experiment.status == "draft"
    assert AuditEvent.objects.filter(action="experiment.create").count() == 2


def test_start_splits_traffic_with_the_sticky_key(setup):
    endpoint, _, _, actor = setup
    experiment = create(endpoint, actor, treatment_percent=30, sticky={"header": "X-User"})
    services.experiment_start(actor=actor, experiment=experiment)
    endpoint.refresh_from_db()
    release = endpoint.desired_release
    assert [(v["version"], v["weight"], v["role"]) for v in release.variants] == [
        ("iris:1", 70, "primary"),
        ("iris:2", 30, "candidate"),
    ]
    assert release.sticky == {"header": "X-User"}
    experiment.refresh_from_db()
    assert experiment.status == "running"
    with pytest.raises(ApplicationError):
        services.experiment_start(actor=actor, experiment=experiment)


def test_verdict_from_logged_outcomes_equals_the_sequential_test(setup):
    endpoint, control, treatment, actor = setup
    experiment = create(endpoint, actor, auto_promote=True)
    services.experiment_start(actor=actor, experiment=experiment)
    generator = np.random.default_rng(3)
    control_outcomes = generator.random(1500) < 0.70
    treatment_outcomes = generator.random(1500) < 0.80
    outcomes(endpoint, control, control_outcomes, "c")
    outcomes(endpoint, treatment, treatment_outcomes, "t")
    experiment = services.experiment_evaluate(experiment_id=experiment.pk)
    expected = sequential.evaluate(
        sequential.ArmSummary.from_values(control_outcomes.astype(float)),
        sequential.ArmSummary.from_values(treatment_outcomes.astype(float)),
        alpha=0.05,
        minimum_effect=0.05,
    )
    assert experiment.verdict == "better" == expected.verdict
    assert experiment.lower == pytest.approx(expected.lower)
    assert experiment.upper == pytest.approx(expected.upper)
    assert experiment.result["control"]["count"] == 1500
    assert experiment.status == "concluded"
    assert ExperimentSnapshot.objects.filter(experiment=experiment).count() == 1
    # auto-promotion: the treatment now serves alone.
    endpoint.refresh_from_db()
    assert [(v["version"], v["weight"]) for v in endpoint.desired_release.variants] == [
        ("iris:2", 100)
    ]
    assert "is better than iris:1 on accuracy" in experiments.verdict_sentence(experiment)


def test_an_aa_experiment_stays_inconclusive_with_the_estimate_inside_each_new_interval(setup):
    endpoint, control, _, actor = setup
    other = make_version(endpoint.team, "iris", 3)
    experiment = create(endpoint, actor, treatment="iris:3")
    services.experiment_start(actor=actor, experiment=experiment)
    generator = np.random.default_rng(11)
    widths, uppers = [], []
    for batch in range(4):
        outcomes(endpoint, control, generator.random(300) < 0.5, f"c{batch}-")
        outcomes(endpoint, other, generator.random(300) < 0.5, f"t{batch}-")
        experiment = services.experiment_evaluate(experiment_id=experiment.pk)
        widths.append(experiment.upper - experiment.lower)
        uppers.append(experiment.upper)
        assert experiment.lower < experiment.result["difference"] < experiment.upper
        assert (experiment.result["p_value"] <= 0.05) is False
    assert experiment.verdict == "inconclusive"
    assert widths == sorted(widths, reverse=True)
    assert len(set(uppers)) == 4  # recomputed at every look, never frozen
    assert "Not known yet" in experiments.verdict_sentence(experiment)
    assert experiments.experiment_progress(experiment) == pytest.approx(1200 / 3043)


def test_a_guardrail_breach_concludes_worse_and_stops_the_loser(setup):
    endpoint, control, treatment, actor = setup
    experiment = create(
        endpoint,
        actor,
        metric="reward",
        planning_variance=1.0,
        guardrails=[{"metric": "error_rate", "minimum_effect": 0.02}],
        auto_stop_loser=True,
    )
    services.experiment_start(actor=actor, experiment=experiment)
    from datetime import UTC, datetime

    moment = datetime.now(tz=UTC)
    rows = []
    for version, error_every in ((control, 0), (treatment, 4)):
        for i in range(400):
            failing = error_every and i % error_every == 0
            rows.append(
                PredictionRecord(
                    endpoint=endpoint,
                    version=version,
                    version_label=version.reference,
                    request_id=f"{version.pk}-{i}",
                    role="primary",
                    created_at=moment,
                    status=500 if failing else 200,
                )
            )
    PredictionRecord.objects.bulk_create(rows)
    experiment = services.experiment_evaluate(experiment_id=experiment.pk)
    assert experiment.verdict == "worse"
    assert experiment.result["guardrails"][0]["status"] == "breached"
    assert experiment.result["action"] == "treatment_stopped"
    endpoint.refresh_from_db()
    assert [v["version"] for v in endpoint.desired_release.variants] == ["iris:1"]
    assert "breaks the error rate guardrail" in experiments.verdict_sentence(experiment)


@pytest.mark.parametrize(
    "fields",
    [
        {"metric": "vibes"},
        {"minimum_effect": 0},
        {"minimum_effect": float("nan")},
        {"alpha": 0.9},
        {"power": 1.5},
        {"treatment_percent": 0},
        {"treatment": "iris:1"},
        {"treatment": "iris:99"},
        {"sticky": {"header": "bad header!"}},
        {"guardrails": ["accuracy"]},
        {"metric": "reward"},  # needs a planning variance
        {"name": ""},
    ],
)
def test_bad_experiments_are_refused(setup, fields):
    endpoint, _, _, actor = setup
    with pytest.raises(ApplicationError):
        create(endpoint, actor, **fields)
    assert not Experiment.objects.exists()


def test_experiment_api_is_scoped_and_role_checked(setup, deployer_api, viewer_api, outsider_api):
    endpoint, _, _, _ = setup
    body = {
        "endpoint": endpoint.name, "name": "api", "control": "iris:1", "treatment": "iris:2",
        "metric": "error_rate", "minimum_effect": 0.01,
    }  # fmt: skip
    assert viewer_api.post("/api/v1/experiments/", body, format="json").status_code == 403
    assert outsider_api.post("/api/v1/experiments/", body, format="json").status_code == 404
    assert (
        deployer_api.post("/api/v1/experiments/", {**body, "x": 1}, format="json").status_code
        == 400
    )
    assert not Experiment.objects.exists()
    created = deployer_api.post("/api/v1/experiments/", body, format="json")
    assert created.status_code == 201, created.content
    pk = created.json()["id"]
    assert viewer_api.get(f"/api/v1/experiments/{pk}/").json()["verdict"] == "inconclusive"
    assert outsider_api.get(f"/api/v1/experiments/{pk}/").status_code == 404
    assert outsider_api.get("/api/v1/experiments/").json()["results"] == []
    assert viewer_api.post(f"/api/v1/experiments/{pk}/start/").status_code == 403
    started = deployer_api.post(f"/api/v1/experiments/{pk}/start/")
    assert started.json()["status"] == "running"
    stopped = deployer_api.post(f"/api/v1/experiments/{pk}/stop/")
    assert stopped.json()["status"] == "stopped"
    assert deployer_api.post(f"/api/v1/experiments/{pk}/stop/").status_code == 400


def test_api_and_page_agree_on_estimate_interval_p_value_progress_and_verdict(
    setup, deployer_api, deployer
):
    from django.test import Client

    endpoint, control, treatment, actor = setup
    experiment = create(endpoint, actor)
    services.experiment_start(actor=actor, experiment=experiment)
    generator = np.random.default_rng(21)
    documents = []
    for batch, rate in enumerate((0.5, 0.5, 0.62)):
        outcomes(endpoint, control, generator.random(1200) < 0.5, f"c{batch}-")
        outcomes(endpoint, treatment, generator.random(1200) < rate, f"t{batch}-")
        services.experiment_evaluate(experiment_id=experiment.pk)
        document = deployer_api.get(f"/api/v1/experiments/{experiment.pk}/").json()
        documents.append(document)
        lower, upper = document["confidence_interval"]
        assert lower < document["difference"] < upper
        assert (document["p_value"] <= document["alpha"]) == (document["verdict"] != "inconclusive")
        assert (lower > 0 or upper < 0) == (document["verdict"] != "inconclusive")
        smaller = min(document["arms"]["control"]["count"], document["arms"]["treatment"]["count"])
        assert document["progress"] == pytest.approx(min(1.0, smaller / 3043))
    assert [d["verdict"] for d in documents] == ["inconclusive", "inconclusive", "better"]
    assert documents[1]["progress"] == pytest.approx(2400 / 3043)
    client = Client()
    client.force_login(deployer)
    page = client.get(f"/experiments/{experiment.pk}/").content.decode()
    final = documents[-1]
    assert f"Always-valid p-value {final['p_value']:.4f}" in page
    assert "Sample size: 100 % of the planned 3043 outcomes per arm" in page
    assert f"difference {final['difference']:+.4g} (confidence interval" in page
