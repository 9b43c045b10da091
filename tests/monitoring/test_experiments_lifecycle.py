"""An experiment's lifecycle follows the endpoint: a deploy, traffic change, promotion, rollback
or stop that removes or re-weights an arm ends it with a reason, everywhere it is shown."""

import threading
import time
from datetime import UTC, datetime

import numpy as np
import pytest
from django.db import connection
from django.test import Client

from accounts.models import AuditEvent
from deployments import services as deployment_services
from deployments.models import DeploymentEvent
from events.models import Webhook, WebhookDelivery
from monitoring import experiments, services
from monitoring.models import Experiment
from tests.monitoring.conftest import make_endpoint, make_version
from tests.monitoring.test_experiments import outcomes

pytestmark = pytest.mark.django_db


@pytest.fixture
def running(team, deployer, make_actor):
    """iris:1 (control, 50 %) against iris:2 (treatment, 50 %) on endpoint "abtest"."""
    control, treatment = make_version(team, "iris", 1), make_version(team, "iris", 2)
    make_version(team, "iris", 3)
    endpoint = make_endpoint(team, "abtest", [(control, 100, "primary")])
    actor = make_actor(deployer)
    experiment = services.experiment_create(
        actor=actor,
        endpoint=endpoint,
        name="ranker",
        control="iris:1",
        treatment="iris:2",
        metric="accuracy",
        minimum_effect=0.05,
    )
    services.experiment_start(actor=actor, experiment=experiment)
    endpoint.refresh_from_db()
    Webhook.objects.create(
        team=team, name="ci", url="https://hooks.example.com/x", events=["experiment.ended"]
    )
    return endpoint, experiment, actor, control, treatment


def test_rollback_ends_the_experiment_with_its_reason_in_api_audit_and_webhook(
    running, deployer_api
):
    endpoint, experiment, actor, _, _ = running
    deployment_services.endpoint_rollback(actor=actor, endpoint=endpoint, release_number=1)
    experiment.refresh_from_db()
    reason = f"ended by the rollback to release 1 by {actor.label}"
    assert (experiment.status, experiment.ended_reason) == ("stopped", reason)
    assert experiment.ended_at is not None
    document = deployer_api.get(f"/api/v1/experiments/{experiment.pk}/").json()
    assert (document["status"], document["ended_reason"]) == ("stopped", reason)
    assert document["verdict_text"].startswith(f"E{reason[1:]}, before a verdict")
    audit = AuditEvent.objects.get(action="experiment.end")
    assert audit.data["reason"] == reason
    assert DeploymentEvent.objects.filter(
        endpoint=endpoint, message=f"Experiment ranker {reason}; its outcomes stop counting."
    ).exists()
    delivery = WebhookDelivery.objects.get(event="experiment.ended")
    assert delivery.payload["ended_reason"] == reason
    assert delivery.payload["status"] == "stopped"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            lambda actor, endpoint: deployment_services.endpoint_deploy(
                actor=actor, endpoint=endpoint, version="iris:3"
            ),
            "ended by the deploy of iris:3 by {label}",
        ),
        (
            lambda actor, endpoint: deployment_services.endpoint_set_traffic(
                actor=actor,
                endpoint=endpoint,
                variants=[
                    {"version": "iris:1", "weight": 80, "role": "primary"},
                    {"version": "iris:2", "weight": 20, "role": "candidate"},
                ],
            ),
            "ended by the traffic change by {label}",
        ),
        (
            lambda actor, endpoint: deployment_services.endpoint_promote(
                actor=actor, endpoint=endpoint
            ),
            "ended by the promotion of iris:2 by {label}",
        ),
        (
            lambda actor, endpoint: deployment_services.endpoint_stop(
                actor=actor, endpoint=endpoint
            ),
            "ended by the stop of the endpoint by {label}",
        ),
    ],
    ids=["deploy", "traffic", "promote", "stop"],
)
def test_every_change_of_an_arm_ends_the_experiment(running, change, reason):
    endpoint, experiment, actor, _, _ = running
    change(actor, endpoint)
    experiment.refresh_from_db()
    assert experiment.status == "stopped"
    assert experiment.ended_reason == reason.format(label=actor.label)
    assert AuditEvent.objects.filter(action="experiment.end", object_id=str(experiment.pk)).exists()


def test_a_change_that_keeps_both_arms_and_their_weights_keeps_it_running(running):
    endpoint, experiment, actor, _, _ = running
    deployment_services.endpoint_set_traffic(
        actor=actor,
        endpoint=endpoint,
        variants=[
            {"version": "iris:1", "weight": 50, "role": "primary"},
            {"version": "iris:2", "weight": 50, "role": "candidate"},
            {"version": "iris:3", "mirror_percent": 10, "role": "shadow"},
        ],
    )
    experiment.refresh_from_db()
    assert (experiment.status, experiment.ended_reason) == ("running", "")
    assert not WebhookDelivery.objects.filter(event="experiment.ended").exists()


def test_a_refused_change_leaves_the_experiment_running(running):
    endpoint, experiment, actor, _, _ = running
    with pytest.raises(Exception, match="sum to 90"):
        deployment_services.endpoint_set_traffic(
            actor=actor,
            endpoint=endpoint,
            variants=[
                {"version": "iris:1", "weight": 60, "role": "primary"},
                {"version": "iris:2", "weight": 30, "role": "candidate"},
            ],
        )
    experiment.refresh_from_db()
    assert experiment.status == "running"


def test_outcomes_after_the_end_are_not_counted(running):
    endpoint, experiment, actor, control, treatment = running
    generator = np.random.default_rng(5)
    outcomes(endpoint, control, generator.random(150) < 0.5, "c")
    outcomes(endpoint, treatment, generator.random(150) < 0.5, "t")
    experiment = services.experiment_evaluate(experiment_id=experiment.pk)
    before = experiment.result
    deployment_services.endpoint_rollback(actor=actor, endpoint=endpoint, release_number=1)
    # The treatment keeps receiving (stale) feedback after it stopped serving.
    outcomes(endpoint, treatment, np.zeros(2000, dtype=bool), "late")
    assert services.experiments_evaluate_all() == 0
    assert services.experiment_evaluate(experiment_id=experiment.pk) is None
    experiment.refresh_from_db()
    assert experiment.result == before
    assert (experiment.status, experiment.verdict) == ("stopped", "inconclusive")
    ended = experiment.ended_at
    counted = experiments.arm_summary(
        endpoint_id=endpoint.pk,
        version_id=treatment.pk,
        metric="accuracy",
        since=experiment.started_at,
        until=ended,
    )
    assert counted.count == 150
    everything = experiments.arm_summary(
        endpoint_id=endpoint.pk,
        version_id=treatment.pk,
        metric="accuracy",
        since=experiment.started_at,
        until=datetime.now(tz=UTC),
    )
    assert everything.count == 2150


def test_the_experiment_page_shows_why_it_ended(running, viewer):
    endpoint, experiment, actor, _, _ = running
    deployment_services.endpoint_rollback(actor=actor, endpoint=endpoint, release_number=1)
    client = Client()
    client.force_login(viewer)
    text = client.get(f"/experiments/{experiment.pk}/").content.decode()
    assert f"ended by the rollback to release 1 by {actor.label}" in text
    assert "data-ended-reason" in text


def test_the_endpoint_page_warns_that_its_actions_end_the_experiment(running, deployer):
    endpoint, experiment, actor, _, _ = running
    client = Client()
    client.force_login(deployer)
    text = client.get(f"/endpoints/{endpoint.name}/").content.decode()
    assert 'data-running-experiment="A/B experiment ranker is running on abtest' in text
    assert "js/experiment-confirm.js" in text
    services.experiment_stop(actor=actor, experiment=experiment)
    text = client.get(f"/endpoints/{endpoint.name}/").content.decode()
    assert "data-running-experiment" not in text


def test_a_manual_stop_records_who_stopped_it(running):
    _, experiment, actor, _, _ = running
    services.experiment_stop(actor=actor, experiment=Experiment.objects.get(pk=experiment.pk))
    experiment.refresh_from_db()
    assert experiment.ended_reason == f"stopped by {actor.label}"
    assert WebhookDelivery.objects.get(event="experiment.ended").payload["ended_reason"] == (
        f"stopped by {actor.label}"
    )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_rollback_during_a_concluding_look_neither_deadlocks_nor_ends_the_verdict(
    running, monkeypatch
):
    """The look locks the endpoint before the experiment, as the deployment services (and their
    release_written receiver) do; the other order deadlocks on PostgreSQL."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (set DATABASE_URL); SQLite serialises writers anyway")
    endpoint, experiment, actor, control, treatment = running
    Experiment.objects.filter(pk=experiment.pk).update(auto_promote=True)
    generator = np.random.default_rng(8)
    outcomes(endpoint, control, generator.random(1500) < 0.5, "c")
    outcomes(endpoint, treatment, generator.random(1500) < 0.8, "t")
    looking, proceed = threading.Event(), threading.Event()
    real = experiments.arm_summary

    def paused(**kwargs):
        if not looking.is_set():
            looking.set()  # the look holds its locks now
            proceed.wait(10)
        return real(**kwargs)

    monkeypatch.setattr("monitoring.services.experiments.arm_summary", paused)
    results: dict = {}

    def run(name, work):
        try:
            results[name] = work()
        except Exception as error:  # collected and asserted on below
            results[name] = error
        finally:
            connection.close()

    look = threading.Thread(
        target=run,
        args=("look", lambda: services.experiment_evaluate(experiment_id=experiment.pk)),
    )
    look.start()
    assert looking.wait(10)
    rollback = threading.Thread(
        target=run,
        args=(
            "rollback",
            lambda: deployment_services.endpoint_rollback(
                actor=actor, endpoint=endpoint, release_number=1
            ),
        ),
    )
    rollback.start()
    time.sleep(0.5)  # the rollback now waits for the endpoint's lock
    proceed.set()
    look.join(30)
    rollback.join(30)
    assert not any(isinstance(result, Exception) for result in results.values()), results
    experiment.refresh_from_db()
    assert (experiment.status, experiment.verdict, experiment.ended_reason) == (
        "concluded",
        "better",
        "",
    )
    reasons = list(endpoint.releases.order_by("number").values_list("reason", flat=True))
    assert reasons == ["deploy", "traffic", "promote", "rollback"]
