"""Signature-safe endpoint changes: the pure comparison, and deploy, traffic, promote and
rollback refusing a version that breaks the served signature unless a deployer forces it."""

import pytest
from django.test import Client

from accounts.models import AuditEvent
from common.errors import ApplicationError
from deployments import services
from deployments.compatibility import compare_signatures
from deployments.models import DeploymentEvent, Endpoint, Release
from registry.models import ModelVersion, RegisteredModel
from tests.deployments.conftest import make_version

X = {"name": "x", "datatype": "FP32", "shape": [-1, 1]}
Y = {"name": "y", "datatype": "FP32", "shape": [-1, 1]}
SERVED = {"inputs": [X], "outputs": [Y]}


def signature(inputs=(X,), outputs=(Y,)):
    return {"inputs": list(inputs), "outputs": list(outputs)}


# --- the comparison (pure) ---------------------------------------------------------------------


def test_the_same_signature_is_compatible_without_notes():
    comparison = compare_signatures(SERVED, signature())
    assert (comparison.is_compatible, comparison.problems, comparison.notes) == (True, (), ())


def test_renamed_input_is_two_problems_a_client_can_read():
    other = signature(inputs=[{"name": "features", "datatype": "FP32", "shape": [-1, 1]}])
    assert compare_signatures(SERVED, other).problems == (
        "input 'x' (FP32 [?, 1]) is gone: requests that send it are refused",
        "input 'features' (FP32 [?, 1]) is new and required: clients do not send it",
    )


@pytest.mark.parametrize(
    ("new_input", "problem"),
    [
        ({**X, "datatype": "INT64"}, "input 'x' datatype FP32 → INT64"),
        (
            {**X, "shape": [4, 1]},
            "input 'x' shape FP32 [?, 1] → FP32 [4, 1] (axis 0 accepted any size, now only 4)",
        ),
        ({**X, "shape": [-1, 1, 1]}, "input 'x' shape FP32 [?, 1] → FP32 [?, 1, 1] (rank 2 → 3)"),
        (
            {**X, "shape": [-1, 3]},
            "input 'x' shape FP32 [?, 1] → FP32 [?, 3] (axis 1 accepted 1, now only 3)",
        ),
    ],
)  # fmt: skip
def test_input_changes_that_refuse_what_clients_send_are_problems(new_input, problem):
    assert compare_signatures(SERVED, signature(inputs=[new_input])).problems == (problem,)


def test_an_input_that_accepts_more_sizes_is_compatible():
    served = signature(inputs=[{**X, "shape": [1, 4]}])
    assert compare_signatures(served, signature(inputs=[{**X, "shape": [-1, 4]}])).is_compatible


def test_outputs_gone_or_changed_are_problems_extra_outputs_are_notes():
    probabilities = {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}
    widened = compare_signatures(SERVED, signature(outputs=[Y, probabilities]))
    assert widened.is_compatible
    assert widened.notes == (
        "adds output 'probabilities' (FP32 [?, 3]); existing clients ignore it",
    )
    assert compare_signatures(SERVED, signature(outputs=[probabilities])).problems == (
        "output 'y' (FP32 [?, 1]) is gone: clients that read it break",
    )
    assert compare_signatures(SERVED, signature(outputs=[{**Y, "shape": [-1, 2]}])).problems == (
        "output 'y' shape FP32 [?, 1] → FP32 [?, 2] (axis 1 was 1, now 2)",
    )
    assert compare_signatures(SERVED, signature(outputs=[{**Y, "datatype": "BYTES"}])).problems == (
        "output 'y' datatype FP32 → BYTES",
    )
    zipmap = {"name": "p", "datatype": "BYTES", "shape": [-1], "type": "seq(map(int64, float))"}
    renamed_keys = {**zipmap, "type": "seq(map(string, float))"}
    assert compare_signatures(
        signature(outputs=[zipmap]), signature(outputs=[renamed_keys])
    ).problems == ("output 'p' type seq(map(int64, float)) → seq(map(string, float))",)


# --- through the services and the API ----------------------------------------------------------


@pytest.fixture
def endpoint(db, versions, dev_target, system):
    return services.endpoint_create(
        actor=system, name="adder-api", target=dev_target, version="adder:1"
    )


@pytest.fixture
def house(team):
    """house:1, a version of another model whose input is named 'features'."""
    model = RegisteredModel.objects.create(team=team, name="house")
    version = make_version(model, number=1)
    ModelVersion.objects.filter(pk=version.pk).update(
        signature=signature(inputs=[{"name": "features", "datatype": "FP32", "shape": [-1, 1]}])
    )
    return version


@pytest.fixture
def wider(adder_model, versions):
    """adder:4 with one extra output."""
    version = make_version(adder_model, number=4)
    extra = {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}
    ModelVersion.objects.filter(pk=version.pk).update(signature=signature(outputs=[Y, extra]))
    return version


def _state():
    return (
        Release.objects.count(),
        AuditEvent.objects.count(),
        DeploymentEvent.objects.count(),
        list(Endpoint.objects.values_list("name", "generation", "desired_release_id")),
    )


@pytest.mark.django_db
def test_deploying_another_models_version_is_400_with_the_diff_and_changes_nothing(
    endpoint, house, scientist_api
):
    before = _state()
    response = scientist_api.post(
        "/api/v1/endpoints/adder-api/deploy/", {"version": "house:1"}, format="json"
    )
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == (
        "house:1 does not fit what this endpoint serves (adder:1); its clients would break:\n"
        "- input 'x' (FP32 [?, 1]) is gone: requests that send it are refused\n"
        "- input 'features' (FP32 [?, 1]) is new and required: clients do not send it\n"
        "A deployer can pass force: true to change it anyway."
    )
    assert _state() == before


@pytest.mark.django_db
def test_force_needs_a_deployer_and_is_audited(endpoint, house, scientist_api, deployer_api):
    before = _state()
    refused = scientist_api.post(
        "/api/v1/endpoints/adder-api/deploy/", {"version": "house:1", "force": True}, format="json"
    )
    assert refused.status_code == 403
    assert _state() == before
    forced = deployer_api.post(
        "/api/v1/endpoints/adder-api/deploy/", {"version": "house:1", "force": True}, format="json"
    )
    assert forced.status_code == 202, forced.content
    audit = AuditEvent.objects.filter(action="endpoint.deploy").latest("id")
    assert audit.data["forced"] is True
    assert audit.data["signature_problems"]["house:1"][0].startswith("input 'x'")
    warning = DeploymentEvent.objects.filter(level="warning").latest("id")
    assert warning.message.startswith("Forced: house:1 breaks the served signature: input 'x'")


@pytest.mark.django_db
def test_an_extra_output_passes_with_a_note(endpoint, wider, scientist_api):
    response = scientist_api.post(
        "/api/v1/endpoints/adder-api/deploy/", {"version": "adder:4", "weight": 10}, format="json"
    )
    assert response.status_code == 202, response.content
    audit = AuditEvent.objects.filter(action="endpoint.deploy").latest("id")
    assert audit.data["signature_notes"] == {
        "adder:4": ["adds output 'probabilities' (FP32 [?, 3]); existing clients ignore it"]
    }
    assert "forced" not in audit.data
    assert DeploymentEvent.objects.filter(
        message="Signature of adder:4: adds output 'probabilities' (FP32 [?, 3]); "
        "existing clients ignore it"
    ).exists()


@pytest.mark.django_db
def test_traffic_promote_and_rollback_are_checked_too(endpoint, house, deployer, make_actor):
    actor = make_actor(deployer)
    split = [
        {"version": "adder:1", "weight": 90, "role": "primary"},
        {"version": "house:1", "weight": 10, "role": "candidate"},
    ]
    with pytest.raises(ApplicationError, match="house:1 does not fit"):
        services.endpoint_set_traffic(actor=actor, endpoint=endpoint, variants=split)
    services.endpoint_set_traffic(actor=actor, endpoint=endpoint, variants=split, force=True)
    with pytest.raises(ApplicationError, match="house:1 does not fit"):
        services.endpoint_promote(actor=actor, endpoint=endpoint)
    services.endpoint_promote(actor=actor, endpoint=endpoint, force=True)
    endpoint.refresh_from_db()
    assert [v["version"] for v in endpoint.desired_release.variants] == ["house:1"]
    # Now house:1 serves: going back to adder:1 breaks house's clients the other way round.
    with pytest.raises(ApplicationError, match=r"adder:1 does not fit .* \(house:1\)"):
        services.endpoint_rollback(actor=actor, endpoint=endpoint, release_number=1)
    release = services.endpoint_rollback(
        actor=actor, endpoint=endpoint, release_number=1, force=True
    )
    assert AuditEvent.objects.filter(action="endpoint.rollback").latest("id").data["forced"]
    assert [v["version"] for v in release.variants] == ["adder:1"]


@pytest.mark.django_db
def test_the_deploy_form_refuses_then_forces_with_the_box_ticked(endpoint, house, deployer):
    client = Client()
    client.force_login(deployer)
    page = client.get("/endpoints/adder-api/").content.decode()
    assert 'name="force"' in page and "js/endpoint-force.js" in page
    refused = client.post(
        "/endpoints/adder-api/deploy/", {"version": "house:1", "weight": 100}, follow=True
    )
    assert "house:1 does not fit what this endpoint serves" in refused.content.decode()
    assert Release.objects.filter(endpoint=endpoint).count() == 1
    client.post(
        "/endpoints/adder-api/deploy/", {"version": "house:1", "weight": 100, "force": "on"}
    )
    endpoint.refresh_from_db()
    assert [v["version"] for v in endpoint.desired_release.variants] == ["house:1"]
