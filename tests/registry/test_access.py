"""Roles and teams: viewers read, outsiders see nothing (404 everywhere), and nothing changes."""

import pytest
from django.test import Client

from accounts.actor import Actor
from accounts.models import AuditEvent
from common.errors import ApplicationError
from registry import selectors, services
from registry.models import Alias, AliasEvent, Artifact, ModelVersion, RegisteredModel
from tests.registry import onnx_files
from tests.registry.conftest import as_upload, register, stored_files

pytestmark = pytest.mark.django_db


@pytest.fixture
def populated(registered, scientist_actor, deployer_actor, onnx_path):
    """iris with a ready, approved version 1 under the protected alias `production`."""
    version = register(scientist_actor, registered, onnx_path(onnx_files.linear_regressor()))
    system = Actor.system("tests")
    services.version_mark_validating(actor=system, version_id=version.pk)
    services.version_record_validation(actor=system, version_id=version.pk, ok=True)
    version.refresh_from_db()
    services.version_approve(actor=deployer_actor, version=version, decision="approved")
    services.alias_set(actor=deployer_actor, model=registered, name="production", version_number=1)
    return registered


def snapshot():
    return (
        list(RegisteredModel.objects.values_list("name", "description", "archived_at")),
        list(ModelVersion.objects.values_list("number", "status", "approval")),
        list(Alias.objects.values_list("name", "version_id")),
        AliasEvent.objects.count(),
        Artifact.objects.count(),
        AuditEvent.objects.count(),
        stored_files(),
    )


def api_calls(path):
    model = "/api/v1/models/iris/"
    return [
        ("get", model, None),
        ("patch", model, {"description": "x"}),
        ("delete", model, None),
        ("get", f"{model}versions/", None),
        ("post", f"{model}versions/", {"file": as_upload(path)}),
        ("get", f"{model}versions/1/", None),
        ("get", f"{model}versions/1/download/", None),
        ("post", f"{model}versions/1/approve/", {"decision": "rejected"}),
        ("get", f"{model}versions/compare/?a=1&b=1", None),
        ("get", f"{model}aliases/", None),
        ("get", f"{model}aliases/production/", None),
        ("put", f"{model}aliases/production/", {"version": 1}),
        ("delete", f"{model}aliases/production/", None),
        ("get", f"{model}aliases/production/history/", None),
    ]


def test_outsider_gets_404_on_every_registry_api_route(populated, outsider_api, onnx_path):
    path = onnx_path(onnx_files.linear_regressor())
    before = snapshot()
    answers = []
    for method, url, data in api_calls(path):
        format_ = "multipart" if data and "file" in data else "json"
        response = getattr(outsider_api, method)(url, data, format=format_)
        answers.append((method, url, response.status_code))
    assert [a for a in answers if a[2] != 404] == []
    assert outsider_api.get("/api/v1/models/").json()["results"] == []
    assert outsider_api.get("/api/v1/models/?q=iris").json()["results"] == []
    assert snapshot() == before


def test_outsider_gets_404_on_every_registry_page(populated, outsider):
    client = Client()
    client.force_login(outsider)
    before = snapshot()
    pages = [
        "/models/iris/",
        "/models/iris/upload/",
        "/models/iris/compare/?a=1&b=1",
        "/models/iris/versions/1/",
        "/models/iris/versions/1/files/model/",
    ]
    changes = [
        "/models/iris/archive/",
        "/models/iris/aliases/",
        "/models/iris/aliases/production/delete/",
        "/models/iris/versions/1/approve/",
        "/models/iris/versions/1/archive/",
        "/models/iris/upload/",
    ]
    answers = [("get", url, client.get(url).status_code) for url in pages]
    answers += [
        (
            "post",
            url,
            client.post(
                url, {"name": "production", "version": "1", "decision": "rejected"}
            ).status_code,
        )
        for url in changes
    ]
    assert [a for a in answers if a[2] != 404] == []
    assert b"iris" not in client.get("/models/").content
    assert snapshot() == before


def test_outsider_cannot_resolve_references(populated, outsider, make_actor):
    for reference in ("iris:1", "iris@production", "iris@latest"):
        with pytest.raises(ApplicationError) as caught:
            selectors.version_resolve(actor=make_actor(outsider), reference=reference)
        assert caught.value.message == "There is no model named 'iris'."


def test_viewer_reads_but_cannot_change_anything(populated, viewer_api, onnx_path):
    path = onnx_path(onnx_files.linear_regressor())
    before = snapshot()
    assert viewer_api.get("/api/v1/models/iris/").status_code == 200
    assert viewer_api.get("/api/v1/models/iris/versions/1/").status_code == 200
    assert viewer_api.get("/api/v1/models/iris/versions/1/download/").status_code == 200
    refused = [
        viewer_api.post("/api/v1/models/", {"name": "new"}, format="json"),
        viewer_api.patch("/api/v1/models/iris/", {"description": "x"}, format="json"),
        viewer_api.delete("/api/v1/models/iris/"),
        viewer_api.post(
            "/api/v1/models/iris/versions/", {"file": as_upload(path)}, format="multipart"
        ),
        viewer_api.post(
            "/api/v1/models/iris/versions/1/approve/", {"decision": "rejected"}, format="json"
        ),
        viewer_api.put("/api/v1/models/iris/aliases/candidate/", {"version": 1}, format="json"),
        viewer_api.delete("/api/v1/models/iris/aliases/production/"),
    ]
    assert [response.status_code for response in refused] == [403] * len(refused)
    assert refused[0].json() == {
        "error": "You do not have permission to perform this action.",
        "detail": {},
    }
    assert snapshot() == before


def test_viewer_pages_refuse_changes(populated, viewer, onnx_path):
    client = Client()
    client.force_login(viewer)
    before = snapshot()
    assert client.get("/models/iris/").status_code == 200
    upload = client.post(
        "/models/iris/upload/", {"file": as_upload(onnx_path(onnx_files.linear_regressor()))}
    )
    approve = client.post("/models/iris/versions/1/approve/", {"decision": "rejected"})
    create = client.post("/models/_new/", {"name": "new", "team": "alpha"})
    assert (upload.status_code, approve.status_code, create.status_code) == (403, 403, 400)
    assert snapshot() == before


def test_scientist_cannot_approve(populated, scientist_api):
    response = scientist_api.post(
        "/api/v1/models/iris/versions/1/approve/", {"decision": "rejected"}, format="json"
    )
    assert response.status_code == 403
    assert ModelVersion.objects.get().approval == "approved"


def test_anonymous_callers_are_refused(populated, client):
    assert client.get("/api/v1/models/").status_code == 401
    assert client.get("/api/v1/models/iris/versions/1/download/").status_code == 401
    response = client.get("/models/iris/")
    assert (response.status_code, response["Location"]) == (
        302,
        "/accounts/login/?next=/models/iris/",
    )
    assert client.post("/models/iris/upload/").status_code == 302
