"""Versions through the API: detail, download, approval, compare, and resolving references."""

import hashlib

import pytest

from accounts.actor import Actor
from common.errors import ApplicationError
from registry import selectors, services
from registry.models import ModelVersion
from tests.registry import onnx_files
from tests.registry.conftest import register

pytestmark = pytest.mark.django_db

SIGNATURE = {
    "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 3]}],
    "outputs": [{"name": "prediction", "datatype": "FP32", "shape": [-1, 1]}],
}


def ready(version, *, signature=SIGNATURE, report=None):
    system = Actor.system("tests")
    services.version_mark_validating(actor=system, version_id=version.pk)
    return services.version_record_validation(
        actor=system,
        version_id=version.pk,
        ok=True,
        signature=signature,
        report=report or {"latency_ms": 1.5, "opsets": {"ai.onnx": 17}},
    )


@pytest.fixture
def two_versions(scientist_actor, registered, onnx_path):
    first = register(
        scientist_actor,
        registered,
        onnx_path(onnx_files.linear_regressor(), "a.onnx"),
        metrics={"rmse": 0.5, "mae": 0.3},
        params={"alpha": 0.1, "solver": "lbfgs"},
        git_commit="aaa",
    )
    second = register(
        scientist_actor,
        registered,
        onnx_path(onnx_files.linear_regressor(seed=5), "b.onnx"),
        metrics={"rmse": 0.25, "mae": 0.3, "r2": 0.9},
        params={"alpha": 0.1, "solver": "adam"},
        git_commit="bbb",
        derived_from=1,
    )
    ready(first)
    ready(
        second,
        signature={
            **SIGNATURE,
            "outputs": [{"name": "prediction", "datatype": "FP64", "shape": [-1, 1]}],
        },
        report={"latency_ms": 1.0, "opsets": {"ai.onnx": 17}},
    )
    return first, second


def test_version_detail_fields(two_versions, scientist_api, onnx_path):
    body = scientist_api.get("/api/v1/models/iris/versions/2/").json()
    assert {
        k: body[k]
        for k in (
            "number",
            "status",
            "status_reason",
            "approval",
            "signature",
            "git_commit",
            "derived_from",
            "aliases",
            "file_name",
        )
    } == {
        "number": 2,
        "status": "ready",
        "status_reason": "",
        "approval": "pending",
        "signature": {
            **SIGNATURE,
            "outputs": [{"name": "prediction", "datatype": "FP64", "shape": [-1, 1]}],
        },
        "git_commit": "bbb",
        "derived_from": 1,
        "aliases": [],
        "file_name": "b.onnx",
    }
    listed = scientist_api.get("/api/v1/models/iris/versions/").json()["results"]
    assert [item["number"] for item in listed] == [2, 1]
    assert scientist_api.get("/api/v1/models/iris/versions/3/").status_code == 404


def test_download_is_an_attachment_with_the_exact_bytes(two_versions, scientist_api):
    response = scientist_api.get("/api/v1/models/iris/versions/1/download/")
    content = b"".join(response.streaming_content)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"] == 'attachment; filename="iris-1.onnx"'
    artifact = two_versions[0].model_artifact
    assert hashlib.sha256(content).hexdigest() == artifact.sha256 == response["X-Content-SHA256"]


def test_approve_flow(
    two_versions, deployer_api, scientist_api, registered, scientist_actor, onnx_path
):
    response = deployer_api.post(
        "/api/v1/models/iris/versions/1/approve/",
        {"decision": "approved", "comment": "Looks good"},
        format="json",
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["approval"], body["approval_comment"], body["approved_by"]) == (
        "approved",
        "Looks good",
        "dana-deployer",
    )
    pending = register(scientist_actor, registered, onnx_path(onnx_files.linear_regressor()))
    response = deployer_api.post(
        f"/api/v1/models/iris/versions/{pending.number}/approve/",
        {"decision": "approved"},
        format="json",
    )
    assert response.status_code == 409
    assert response.json()["error"] == "Only ready versions can be approved; version 3 is pending."
    response = deployer_api.post(
        "/api/v1/models/iris/versions/2/approve/", {"decision": "maybe"}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["error"] == 'decision: "maybe" is not a valid choice.'
    response = deployer_api.post(
        "/api/v1/models/iris/versions/2/approve/",
        data="decision=approved",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 415


def test_compare_lists_differences_only(two_versions, scientist_api):
    body = scientist_api.get("/api/v1/models/iris/versions/compare/?a=1&b=2").json()
    assert body["a"] == "iris:1" and body["b"] == "iris:2" and body["identical"] is False
    differences = body["differences"]
    assert differences["metrics"] == {
        "r2": {"a": None, "b": 0.9},
        "rmse": {"a": 0.5, "b": 0.25, "delta": -0.25},
    }
    assert differences["params"] == {"solver": {"a": "lbfgs", "b": "adam"}}
    assert differences["signature"] == {
        "outputs": {
            "prediction": {
                "a": {"name": "prediction", "datatype": "FP32", "shape": [-1, 1]},
                "b": {"name": "prediction", "datatype": "FP64", "shape": [-1, 1]},
            }
        }
    }
    assert differences["validation"] == {"latency_ms": {"a": 1.5, "b": 1.0, "delta": -0.5}}
    fields = differences["fields"]
    assert set(fields) == {"git_commit", "sha256", "derived_from"}
    assert fields["git_commit"] == {"a": "aaa", "b": "bbb"}
    assert fields["derived_from"] == {"a": None, "b": 1}
    same = scientist_api.get("/api/v1/models/iris/versions/compare/?a=2&b=2").json()
    assert (same["identical"], same["differences"]) == (True, {})
    bad = scientist_api.get("/api/v1/models/iris/versions/compare/?a=1&b=x")
    assert (bad.status_code, bad.json()["error"]) == (400, "Give ?b= a version number.")
    assert scientist_api.get("/api/v1/models/iris/versions/compare/?a=1&b=9").status_code == 404


class TestResolve:
    def test_number_alias_latest_and_v_forms(
        self, two_versions, registered, scientist_actor, scientist, make_actor
    ):
        actor = make_actor(scientist)
        services.alias_set(
            actor=scientist_actor, model=registered, name="candidate", version_number=1
        )

        def resolve(reference):
            return selectors.version_resolve(actor=actor, reference=reference).reference

        assert [
            resolve(r)
            for r in ("iris:1", "iris:2", "iris@candidate", "iris@latest", "iris@v1", " iris:2 ")
        ] == ["iris:1", "iris:2", "iris:1", "iris:2", "iris:1", "iris:2"]
        assert (
            selectors.version_resolve(
                actor=Actor.system("deployments"), reference="iris@candidate"
            ).number
            == 1
        )

    @pytest.mark.parametrize(
        ("reference", "message"),
        [
            ("iris", "'iris' is not a version reference; write 'model:N' or 'model@alias'."),
            ("iris:x", "'iris:x' is not a version reference; write 'model:N' or 'model@alias'."),
            (
                "iris:1:2",
                "'iris:1:2' is not a version reference; write 'model:N' or 'model@alias'.",
            ),
            ("nope:1", "There is no model named 'nope'."),
            ("iris:7", "Model 'iris' has no version 7 (it has versions 1 to 2)."),
            ("iris@nothing", "Model 'iris' has no alias 'nothing'. Its aliases: candidate."),
        ],
    )
    def test_unknown_references_read_well(
        self, two_versions, registered, scientist_actor, scientist, make_actor, reference, message
    ):
        services.alias_set(
            actor=scientist_actor, model=registered, name="candidate", version_number=1
        )
        with pytest.raises(ApplicationError) as caught:
            selectors.version_resolve(actor=make_actor(scientist), reference=reference)
        assert caught.value.message == message

    def test_latest_needs_a_ready_version(
        self, registered, scientist_actor, scientist, make_actor, onnx_path
    ):
        register(scientist_actor, registered, onnx_path(onnx_files.linear_regressor()))
        with pytest.raises(ApplicationError) as caught:
            selectors.version_resolve(actor=make_actor(scientist), reference="iris@latest")
        assert caught.value.message == "Model 'iris' has no ready version yet."


def test_archive_a_version(two_versions, scientist_actor, deployer_actor):
    first, _second = two_versions
    archived = services.version_archive(actor=scientist_actor, version=first)
    assert archived.status == "archived"
    services.version_approve(actor=deployer_actor, version=_second, decision="approved")
    from django.core.exceptions import PermissionDenied

    with pytest.raises(PermissionDenied):
        services.version_archive(actor=scientist_actor, version=ModelVersion.objects.get(number=2))
    assert (
        services.version_archive(
            actor=deployer_actor, version=ModelVersion.objects.get(number=2)
        ).status
        == "archived"
    )


def test_openapi_schema_builds(scientist_api):
    response = scientist_api.get("/api/schema/")
    assert response.status_code == 200
    text = response.content.decode()
    for path in (
        "/api/v1/models/{name}/versions/{number}/download/",
        "/api/v1/models/{model_name}/aliases/{alias}/history/",
    ):
        assert path.replace("{name}", "{model_name}") in text or path in text
