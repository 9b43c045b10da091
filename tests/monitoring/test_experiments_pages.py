"""The experiment pages and the guardrails page: scoped to the user's teams, CSRF on changes."""

import pytest
from django.test import Client

from monitoring import services
from tests.monitoring.conftest import make_endpoint, make_version

pytestmark = pytest.mark.django_db


@pytest.fixture
def experiment(team, deployer, make_actor):
    control = make_version(team, "iris", 1)
    make_version(team, "iris", 2)
    endpoint = make_endpoint(team, "paged", [(control, 100, "primary")])
    actor = make_actor(deployer)
    services.rollback_policy_set(
        actor=actor,
        endpoint=endpoint,
        criteria=[{"metric": "error_rate", "threshold": 0.05}],
    )
    return services.experiment_create(
        actor=actor,
        endpoint=endpoint,
        name="ranker",
        control="iris:1",
        treatment="iris:2",
        metric="accuracy",
        minimum_effect=0.05,
        guardrails=["error_rate"],
    )


def login(user) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def test_pages_show_the_experiment_to_members_only(experiment, viewer, outsider):
    page = login(viewer).get(f"/experiments/{experiment.pk}/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "No data yet" in text and "3043" in text and 'data-figure="experiment-figure"' in text
    assert "ranker" in login(viewer).get("/experiments/").content.decode()
    assert login(outsider).get(f"/experiments/{experiment.pk}/").status_code == 404
    assert "ranker" not in login(outsider).get("/experiments/").content.decode()
    guard = login(viewer).get("/endpoints/paged/guardrails/")
    assert guard.status_code == 200 and "error_rate" in guard.content.decode()
    assert login(outsider).get("/endpoints/paged/guardrails/").status_code == 404


def test_start_needs_csrf_and_the_deployer_role(experiment, deployer, viewer):
    assert login(deployer).post(f"/experiments/{experiment.pk}/start/").status_code == 403
    client = Client()
    client.force_login(viewer)
    assert client.post(f"/experiments/{experiment.pk}/start/").status_code == 403
    experiment.refresh_from_db()
    assert experiment.status == "draft"
    client.force_login(deployer)
    response = client.post(f"/experiments/{experiment.pk}/start/")
    assert response.status_code == 302
    experiment.refresh_from_db()
    assert experiment.status == "running"
