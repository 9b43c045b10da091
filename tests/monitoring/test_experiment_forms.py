"""The browser forms for experiments and rollback policies: they call the services the API calls,
show refused input next to its field, store nothing on refusal, and keep roles and teams apart."""

import pytest
from django.test import Client

from accounts.models import AuditEvent, Role
from monitoring import services
from monitoring.api.views import experiment_document, policy_document
from monitoring.models import Experiment, ExperimentStatus, RollbackPolicy
from tests.factories import MembershipFactory
from tests.monitoring.conftest import make_endpoint, make_version

pytestmark = pytest.mark.django_db

EXPERIMENT_FORM = {
    "endpoint": "paged",
    "name": "ranker",
    "description": "new ranking",
    "control": "iris:1",
    "treatment": "iris:2",
    "treatment_percent": "20",
    "sticky_by": "header",
    "sticky_name": "X-User",
    "metric": "accuracy",
    "guardrails": ["error_rate", "latency"],
    "alpha": "0.05",
    "power": "0.8",
    "minimum_effect": "0.05",
    "planning_variance": "",
    "auto_promote": "on",
}
EXPERIMENT_JSON = {
    "endpoint": "paged",
    "name": "ranker",
    "description": "new ranking",
    "control": "iris:1",
    "treatment": "iris:2",
    "treatment_percent": 20,
    "sticky": {"header": "X-User"},
    "metric": "accuracy",
    "guardrails": ["error_rate", "latency"],
    "alpha": 0.05,
    "power": 0.8,
    "minimum_effect": 0.05,
    "auto_promote": True,
}
POLICY_FORM = {
    "criteria-TOTAL_FORMS": "3",
    "criteria-INITIAL_FORMS": "3",
    "criteria-MIN_NUM_FORMS": "0",
    "criteria-MAX_NUM_FORMS": "10",
    "criteria-0-metric": "error_rate",
    "criteria-0-comparator": "",
    "criteria-0-threshold": "0.05",
    "criteria-0-window_minutes": "5",
    "criteria-0-minimum_samples": "100",
    "criteria-1-metric": "latency_p95",
    "criteria-1-comparator": "gt",
    "criteria-1-threshold": "1.5",
    "criteria-1-relative_to_control": "on",
    "criteria-1-window_minutes": "10",
    "criteria-1-minimum_samples": "50",
    "criteria-2-metric": "",
    "criteria-2-threshold": "",
    "criteria-2-window_minutes": "5",
    "criteria-2-minimum_samples": "100",
    "failure_limit": "2",
    "on_inconclusive": "rollback",
    "scope": "rollouts",
    "dry_run": "on",
    "is_enabled": "on",
}
POLICY_JSON = {
    "criteria": [
        {"metric": "error_rate", "threshold": 0.05, "window_minutes": 5, "minimum_samples": 100},
        {
            "metric": "latency_p95",
            "comparator": "gt",
            "threshold": 1.5,
            "relative_to_control": True,
            "window_minutes": 10,
            "minimum_samples": 50,
        },
    ],
    "failure_limit": 2,
    "on_inconclusive": "rollback",
    "scope": "rollouts",
    "dry_run": True,
    "is_enabled": True,
}


@pytest.fixture
def endpoint(team):
    control = make_version(team, "iris", 1)
    make_version(team, "iris", 2)
    return make_endpoint(team, "paged", [(control, 100, "primary")])


def login(user, *, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def stored() -> tuple[int, int, list]:
    return (
        Experiment.objects.count(),
        AuditEvent.objects.count(),
        list(RollbackPolicy.objects.values()),
    )


# --- experiments ------------------------------------------------------------------------------


def test_an_experiment_made_with_the_form_equals_the_one_the_api_makes(
    endpoint, deployer, deployer_api
):
    response = login(deployer).post("/experiments/new/", EXPERIMENT_FORM, follow=True)
    made_by_form = Experiment.objects.get()
    assert response.redirect_chain == [(f"/experiments/{made_by_form.pk}/", 302)]
    text = response.content.decode()
    assert "plans for 1902 outcomes per arm" in text
    assert "of the planned 1902 outcomes per arm" in text

    answer = deployer_api.post("/api/v1/experiments/", EXPERIMENT_JSON, format="json")
    assert answer.status_code == 201
    made_by_api = Experiment.objects.get(pk=answer.json()["id"])
    form_document = {**experiment_document(made_by_form), "id": None}
    api_document = {**experiment_document(made_by_api), "id": None}
    assert form_document == api_document
    assert form_document["sticky"] == {"header": "X-User"}
    assert form_document["guardrails"] == [
        {"metric": "error_rate", "minimum_effect": 0.01},
        {"metric": "latency", "minimum_effect": 0.05},
    ]
    assert (form_document["planned_sample_size"], form_document["status"]) == (1902, "draft")
    assert form_document["auto_promote"] is True and form_document["auto_stop_loser"] is False
    assert AuditEvent.objects.filter(action="experiment.create").count() == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"treatment": "iris:1"}, "control and treatment must be different versions."),
        ({"treatment": "nope:1"}, "There is no model named &#x27;nope&#x27;."),
        ({"treatment": "iris:7"}, "Model &#x27;iris&#x27; has no version 7"),
        ({"alpha": "0.9"}, "alpha must be between 0 and 0.5."),
        ({"power": "1"}, "power must be between 0 and 1."),
        ({"minimum_effect": "a lot"}, "Enter a number."),
        ({"minimum_effect": "nan"}, "Enter a number."),
        ({"minimum_effect": "-1"}, "minimum_effect must be between 0 and 1e+06."),
        ({"treatment_percent": "100"}, "treatment_percent must be a whole number from 1 to 99."),
        ({"metric": "reward"}, "planning_variance (the outcome&#x27;s expected variance)"),
        ({"metric": "clicks"}, "Select a valid choice. clicks is not one of the available"),
        ({"sticky_name": "not a name!"}, "sticky must be {&quot;header&quot;: NAME}"),
        ({"sticky_name": ""}, "Name the header or cookie that keeps callers sticky."),
        ({"guardrails": ["accuracy"]}, "Select a valid choice. accuracy is not one of"),
        ({"name": ""}, "This field is required."),
        ({"endpoint": ""}, "This field is required."),
    ],
)
def test_bad_experiment_input_shows_the_reason_and_stores_nothing(
    endpoint, deployer, change, message
):
    before = stored()
    response = login(deployer).post("/experiments/new/", {**EXPERIMENT_FORM, **change})
    assert response.status_code == 200
    text = response.content.decode()
    assert message in text
    assert 'class="error"' in text
    assert 'name="control" value="iris:1"' in text  # what was typed stays in the form
    assert stored() == before


def test_only_deployers_are_offered_the_experiment_form(endpoint, team, viewer, scientist):
    for user in (viewer, scientist):
        client = login(user)
        assert "/experiments/new/" not in client.get("/experiments/").content.decode()
        assert client.get("/experiments/new/").status_code == 403
        before = stored()
        assert client.post("/experiments/new/", EXPERIMENT_FORM).status_code == 403
        assert stored() == before


def test_a_deployer_elsewhere_gets_403_for_an_endpoint_they_only_view(
    endpoint, team, other_team, viewer
):
    MembershipFactory(user=viewer, team=other_team, role=Role.DEPLOYER)
    make_endpoint(other_team, "theirs", [(make_version(other_team, "rose", 1), 100, "primary")])
    client = login(viewer)
    page = client.get("/experiments/new/")
    assert page.status_code == 200
    assert 'value="paged"' not in page.content.decode()  # not among the endpoints offered
    before = stored()
    assert client.post("/experiments/new/", EXPERIMENT_FORM).status_code == 403
    assert stored() == before


def test_another_team_cannot_name_our_endpoint(endpoint, other_team, outsider):
    make_endpoint(other_team, "theirs", [(make_version(other_team, "rose", 1), 100, "primary")])
    client = login(outsider)
    before = stored()
    ours = client.post("/experiments/new/", EXPERIMENT_FORM)
    nowhere = client.post("/experiments/new/", {**EXPERIMENT_FORM, "endpoint": "nowhere"})
    assert ours.status_code == nowhere.status_code == 404
    assert stored() == before


def test_creating_an_experiment_needs_the_csrf_token(endpoint, deployer):
    client = login(deployer, csrf=True)
    before = stored()
    assert client.post("/experiments/new/", EXPERIMENT_FORM).status_code == 403
    assert stored() == before
    page = client.get("/experiments/new/?endpoint=paged")
    token = page.cookies["csrftoken"].value
    response = client.post("/experiments/new/", {**EXPERIMENT_FORM, "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert Experiment.objects.get().name == "ranker"


def test_the_endpoint_page_links_to_a_form_started_from_its_split(endpoint, team, deployer):
    candidate = make_version(team, "iris", 3)
    make_endpoint(
        team,
        "split",
        [(make_version(team, "iris", 4), 90, "primary"), (candidate, 10, "candidate")],
    )
    client = login(deployer)
    guard = client.get("/endpoints/split/guardrails/").content.decode()
    assert 'href="/experiments/new/?endpoint=split"' in guard
    form = client.get("/experiments/new/?endpoint=split").content.decode()
    assert '<option value="split" selected>' in form
    assert 'name="control" value="iris:4"' in form
    assert 'name="treatment" value="iris:3"' in form
    assert '<option value="iris:2">' in form  # the version list offered while typing


def test_the_detail_page_asks_before_stopping(endpoint, deployer, viewer, make_actor):
    experiment = services.experiment_create(
        actor=make_actor(deployer),
        endpoint=endpoint,
        name="ranker",
        control="iris:1",
        treatment="iris:2",
        metric="accuracy",
        minimum_effect=0.05,
    )
    draft = login(deployer).get(f"/experiments/{experiment.pk}/").content.decode()
    assert "Start: split the traffic" in draft and "Discard the draft" in draft
    services.experiment_start(actor=make_actor(deployer), experiment=experiment)
    running = login(deployer).get(f"/experiments/{experiment.pk}/").content.decode()
    assert 'data-confirm="Stop ranker? Measuring ends' in running
    assert (
        "Stop the experiment"
        not in login(viewer).get(f"/experiments/{experiment.pk}/").content.decode()
    )
    experiment.refresh_from_db()
    assert experiment.status == ExperimentStatus.RUNNING


# --- rollback policies ------------------------------------------------------------------------


def test_a_policy_made_with_the_form_equals_the_one_the_api_makes(endpoint, team, deployer):
    client = login(deployer)
    page = client.get("/endpoints/paged/guardrails/").content.decode()
    assert "Set a policy" in page and 'name="criteria-0-metric"' in page
    response = client.post("/endpoints/paged/guardrails/policy/", POLICY_FORM)
    assert response.status_code == 302
    assert response["Location"] == "/endpoints/paged/guardrails/"
    made_by_form = policy_document(RollbackPolicy.objects.get(endpoint=endpoint))

    other = make_endpoint(team, "other", [(make_version(team, "iris", 5), 100, "primary")])
    from tests.conftest import token_client

    answer = token_client(deployer, team).put(
        "/api/v1/endpoints/other/rollback-policy/", POLICY_JSON, format="json"
    )
    assert answer.status_code == 200
    assert made_by_form == policy_document(RollbackPolicy.objects.get(endpoint=other))
    assert made_by_form["criteria"] == [
        {
            "metric": "error_rate",
            "comparator": "gt",
            "threshold": 0.05,
            "relative_to_control": False,
            "window_minutes": 5,
            "minimum_samples": 100,
        },
        {
            "metric": "latency_p95",
            "comparator": "gt",
            "threshold": 1.5,
            "relative_to_control": True,
            "window_minutes": 10,
            "minimum_samples": 50,
        },
    ]
    assert AuditEvent.objects.filter(action="rollback_policy.create").count() == 2


def test_the_policy_form_edits_the_existing_policy(endpoint, deployer, make_actor):
    services.rollback_policy_set(
        actor=make_actor(deployer),
        endpoint=endpoint,
        criteria=POLICY_JSON["criteria"],
        failure_limit=2,
    )
    client = login(deployer)
    page = client.get("/endpoints/paged/guardrails/").content.decode()
    assert "Edit the policy" in page
    assert 'name="criteria-1-threshold" value="1.5"' in page
    assert 'name="criteria-3-metric"' in page  # two empty rows to add criteria
    edit = {
        **POLICY_FORM,
        "criteria-0-metric": "",  # drops the error-rate row
        "criteria-0-threshold": "",
        "scope": "always",
    }
    del edit["dry_run"]  # an unticked box is not sent
    assert client.post("/endpoints/paged/guardrails/policy/", edit).status_code == 302
    policy = RollbackPolicy.objects.get(endpoint=endpoint)
    assert [c["metric"] for c in policy.criteria] == ["latency_p95"]
    assert (policy.scope, policy.dry_run, policy.failure_limit) == ("always", False, 2)
    assert AuditEvent.objects.filter(action="rollback_policy.update").count() == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {
                "criteria-0-metric": "",
                "criteria-0-threshold": "",
                "criteria-1-metric": "",
                "criteria-1-threshold": "",
            },
            "criteria must be a list of 1 to 10 criteria.",
        ),
        ({"criteria-0-threshold": ""}, "Give the threshold"),
        ({"criteria-2-threshold": "0.3"}, "Choose the metric this threshold is for."),
        ({"criteria-1-window_minutes": "0"}, "criterion 2 window_minutes must be 1-1440."),
        ({"criteria-0-threshold": "-1"}, "criterion 1 threshold must be a number 0-1e6."),
        ({"criteria-0-threshold": "inf"}, "Enter a number."),
        ({"criteria-0-metric": "cpu"}, "Select a valid choice. cpu is not one of"),
        ({"failure_limit": "0"}, "failure_limit must be a whole number 1-100."),
        ({"failure_limit": "many"}, "Enter a whole number."),
        ({"on_inconclusive": "panic"}, "Select a valid choice. panic is not one of"),
        ({"criteria-TOTAL_FORMS": "11"}, "Please submit at most 10 forms."),
        ({"criteria-TOTAL_FORMS": "x"}, "ManagementForm data is missing or has been tampered"),
    ],
)
def test_bad_policy_input_shows_the_reason_and_changes_nothing(
    endpoint, deployer, make_actor, change, message
):
    services.rollback_policy_set(
        actor=make_actor(deployer),
        endpoint=endpoint,
        criteria=[{"metric": "accuracy", "threshold": 0.8}],
    )
    before = stored()
    response = login(deployer).post(
        "/endpoints/paged/guardrails/policy/", {**POLICY_FORM, **change}
    )
    assert response.status_code == 200
    text = response.content.decode()
    assert message in text
    assert 'class="error"' in text
    assert stored() == before


def test_only_deployers_get_the_policy_form(endpoint, viewer, scientist, outsider):
    for user in (viewer, scientist):
        client = login(user)
        page = client.get("/endpoints/paged/guardrails/").content.decode()
        assert "/guardrails/policy/" not in page and "New A/B experiment" not in page
        before = stored()
        assert client.post("/endpoints/paged/guardrails/policy/", POLICY_FORM).status_code == 403
        assert stored() == before
    before = stored()
    client = login(outsider)
    assert client.post("/endpoints/paged/guardrails/policy/", POLICY_FORM).status_code == 404
    assert client.post("/endpoints/nowhere/guardrails/policy/", POLICY_FORM).status_code == 404
    assert stored() == before


def test_saving_a_policy_needs_the_csrf_token_and_a_post(endpoint, deployer):
    client = login(deployer, csrf=True)
    before = stored()
    assert client.post("/endpoints/paged/guardrails/policy/", POLICY_FORM).status_code == 403
    assert client.get("/endpoints/paged/guardrails/policy/").status_code == 405
    assert stored() == before
    token = client.get("/endpoints/paged/guardrails/").cookies["csrftoken"].value
    response = client.post(
        "/endpoints/paged/guardrails/policy/", {**POLICY_FORM, "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302
    assert RollbackPolicy.objects.get(endpoint=endpoint).failure_limit == 2


def test_a_deployer_without_endpoints_is_told_to_deploy_first(team, deployer):
    page = login(deployer).get("/experiments/new/")
    assert page.status_code == 200
    assert "No endpoint to experiment on yet." in page.content.decode()
    assert "/experiments/new/" in login(deployer).get("/experiments/").content.decode()
