"""Registry pages: lists, model and version pages, htmx polling, upload by XHR, forms."""

import re

import pytest
from django.test import Client

from accounts.actor import Actor
from registry import services
from registry.models import Alias, ModelVersion, RegisteredModel
from tests.registry import onnx_files
from tests.registry.conftest import as_upload, raw_multipart, register, stored_files

pytestmark = pytest.mark.django_db

INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def ready(version):
    system = Actor.system("tests")
    services.version_mark_validating(actor=system, version_id=version.pk)
    return services.version_record_validation(
        actor=system,
        version_id=version.pk,
        ok=True,
        signature={
            "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 3]}],
            "outputs": [{"name": "prediction", "datatype": "FP32", "shape": [-1, 1]}],
        },
        report={"latency_ms": 0.12, "opsets": {"ai.onnx": 17}, "checks": ["parse"]},
    )


def test_model_list_search_tag_and_pagination(team, scientist, scientist_actor):
    for index in range(30):
        services.model_create(
            actor=scientist_actor,
            team=team,
            name=f"model-{index:02d}",
            tags={"stage": "prod" if index % 2 else "dev"},
        )
    client = login(scientist)
    page = client.get("/models/")
    assert page.status_code == 200
    assert page.content.count(b'href="/models/model-') == 25
    assert b"Page 1 of 2 (30 in all)" in page.content
    assert client.get("/models/?page=2").content.count(b'href="/models/model-') == 5
    found = client.get("/models/?q=model-07").content
    assert found.count(b'href="/models/model-') == 1
    tagged = client.get("/models/?tag=stage%3Dprod").content
    assert tagged.count(b'href="/models/model-') == 15
    assert not INLINE_SCRIPT.search(page.content)


def test_create_model_from_the_list_page(team, scientist):
    client = login(scientist)
    response = client.post(
        "/models/_new/",
        {
            "name": "iris",
            "team": "alpha",
            "description": "Flowers",
            "tags": "task=classification\nowner=growth",
        },
    )
    assert response.status_code == 302
    assert response["Location"] == "/models/iris/upload/"
    assert RegisteredModel.objects.get().tags == {"task": "classification", "owner": "growth"}
    again = client.post("/models/_new/", {"name": "IRIS", "team": "alpha"})
    assert again.status_code == 400
    assert b"Model names are lowercase: use &#x27;iris&#x27;." in again.content


def test_model_page_shows_versions_badges_aliases_and_history(
    registered, scientist, scientist_actor, deployer_actor, onnx_path
):
    path = onnx_path(onnx_files.linear_regressor())
    first = ready(register(scientist_actor, registered, path))
    register(scientist_actor, registered, path)
    services.version_approve(actor=deployer_actor, version=first, decision="approved")
    services.alias_set(
        actor=deployer_actor, model=registered, name="production", version_number=1, reason="launch"
    )
    content = login(scientist).get("/models/iris/").content.decode()
    assert 'href="/models/iris/versions/2/"' in content
    assert '<span class="badge status-ready" title="">ready</span>' in content
    assert '<span class="badge status-pending" title="">pending</span>' in content
    assert '<span class="badge status-approved">approved</span>' in content
    assert '<span class="badge status-approved">@production</span>' in content
    assert "set to v1" in content and "launch" in content
    assert 'id="alias-set"' in content


def test_set_and_remove_alias_from_the_page(registered, scientist, scientist_actor, onnx_path):
    ready(register(scientist_actor, registered, onnx_path(onnx_files.linear_regressor())))
    client = login(scientist)
    response = client.post(
        "/models/iris/aliases/",
        {"name": "candidate", "version": "1", "reason": "try it"},
        follow=True,
    )
    assert b"iris@candidate now points at version 1." in response.content
    assert Alias.objects.get().name == "candidate"
    refused = client.post("/models/iris/aliases/", {"name": "latest", "version": "1"}, follow=True)
    assert b"&#x27;latest&#x27; is reserved" in refused.content
    client.post("/models/iris/aliases/candidate/delete/", {"reason": "done"})
    assert not Alias.objects.exists()


def test_version_page_and_status_polling(
    registered, scientist, deployer, scientist_actor, onnx_path
):
    version = register(scientist_actor, registered, onnx_path(onnx_files.linear_regressor()))
    client = login(scientist)
    page = client.get("/models/iris/versions/1/").content.decode()
    assert 'hx-get="/models/iris/versions/1/" hx-trigger="every 2s"' in page
    partial = client.get("/models/iris/versions/1/", HTTP_HX_REQUEST="true")
    assert partial.content.decode().startswith('<div id="version-status" hx-get=')
    assert "HX-Refresh" not in partial
    ready(version)
    partial = client.get("/models/iris/versions/1/", HTTP_HX_REQUEST="true")
    assert partial["HX-Refresh"] == "true"
    assert "hx-trigger" not in partial.content.decode()
    page = client.get("/models/iris/versions/1/").content.decode()
    assert "hx-trigger" not in page
    assert "<td><code>features</code></td><td>FP32</td><td><code>[-1, 3]</code></td>" in page
    assert "<th>Single-row latency (ms)</th><td>0.12</td>" in page
    assert 'href="/models/iris/versions/1/files/model/"' in page
    assert 'data-confirm="Archive version 1 of iris?' in page
    assert 'id="approve"' not in page  # scientists do not review
    assert 'id="approve"' in login(deployer).get("/models/iris/versions/1/").content.decode()
    assert not INLINE_SCRIPT.search(page.encode())


def test_approve_and_archive_from_the_page(registered, deployer, scientist_actor, onnx_path):
    ready(register(scientist_actor, registered, onnx_path(onnx_files.linear_regressor())))
    client = login(deployer)
    response = client.post(
        "/models/iris/versions/1/approve/", {"decision": "approved", "comment": "ok"}, follow=True
    )
    assert b"Version 1 approved." in response.content
    assert ModelVersion.objects.get().approval == "approved"
    response = client.post("/models/iris/versions/1/archive/", follow=True)
    assert b"Version 1 archived." in response.content
    assert ModelVersion.objects.get().status == "archived"


def test_file_download_from_the_page(registered, viewer, scientist_actor, onnx_path):
    path = onnx_path(onnx_files.linear_regressor())
    register(scientist_actor, registered, path)
    response = login(viewer).get("/models/iris/versions/1/files/model/")
    assert response["Content-Disposition"] == 'attachment; filename="iris-1.onnx"'
    assert b"".join(response.streaming_content) == path.read_bytes()
    assert login(viewer).get("/models/iris/versions/1/files/reference/").status_code == 404


def test_uploaded_file_name_is_escaped_on_display(registered, scientist, onnx_path):
    client = login(scientist)
    hostile = "<img src=x onerror=alert(1)>.onnx"
    body = raw_multipart(
        {}, {"file": (hostile, onnx_path(onnx_files.linear_regressor()).read_bytes())}
    )
    token = client.get("/models/iris/upload/").cookies["csrftoken"].value
    response = client.post(
        "/models/iris/upload/",
        HTTP_X_CSRFTOKEN=token,
        HTTP_X_REQUESTED_WITH="XMLHttpRequest",
        **body,
    )
    assert response.status_code == 201
    page = client.get("/models/iris/versions/1/").content.decode()
    assert "&lt;img src=x onerror=alert(1)&gt;.onnx" in page
    assert "<img src=x" not in page


class TestUploadPage:
    def test_page_loads_its_script_from_a_file(self, registered, scientist):
        page = login(scientist).get("/models/iris/upload/").content
        assert b'<script src="/static/js/upload.js" defer></script>' in page
        assert b"data-upload" in page
        assert not INLINE_SCRIPT.search(page)

    def test_xhr_upload_answers_json_201(self, registered, scientist, onnx_path):
        client = login(scientist)
        response = client.post(
            "/models/iris/upload/",
            {
                "file": as_upload(onnx_path(onnx_files.linear_regressor())),
                "metrics": '{"rmse": 0.3}',
            },
            HTTP_X_REQUESTED_WITH="XMLHttpRequest",
        )
        assert response.status_code == 201
        assert response.json() == {
            "number": 1,
            "status": "pending",
            "url": "/models/iris/versions/1/",
            "api_url": "/api/v1/models/iris/versions/1/",
        }
        # upload.js follows validation through the API with the same session.
        assert client.get("/api/v1/models/iris/versions/1/").json()["status"] == "pending"
        assert ModelVersion.objects.get().metrics == {"rmse": 0.3}

    def test_plain_form_post_redirects_to_the_version(self, registered, scientist, onnx_path):
        response = login(scientist).post(
            "/models/iris/upload/", {"file": as_upload(onnx_path(onnx_files.linear_regressor()))}
        )
        assert (response.status_code, response["Location"]) == (302, "/models/iris/versions/1/")

    def test_refusals_answer_json_with_nothing_stored(
        self, registered, scientist, nothing_left_behind
    ):
        response = login(scientist).post(
            "/models/iris/upload/",
            {"file": as_upload(onnx_files.pickle_bytes())},
            HTTP_X_REQUESTED_WITH="XMLHttpRequest",
        )
        assert response.status_code == 400
        assert response.json()["error"].startswith("This is a Python pickle")

    def test_oversized_upload_answers_413(
        self, registered, scientist, nothing_left_behind, settings
    ):
        settings.MODELDECK_MAX_UPLOAD_BYTES = 1_000
        client = login(scientist)
        response = client.post(
            "/models/iris/upload/",
            {"file": as_upload(b"\x08" * 5_000)},
            HTTP_X_REQUESTED_WITH="XMLHttpRequest",
        )
        assert response.status_code == 413
        assert response.json()["error"] == "The upload is larger than the limit of 1000 bytes."
        page = client.post("/models/iris/upload/", {"file": as_upload(b"\x08" * 5_000)})
        assert page.status_code == 413
        assert b"The upload is larger than the limit of 1000 bytes." in page.content

    def test_csrf_is_enforced_after_the_handler_is_installed(
        self, registered, scientist, onnx_path, nothing_left_behind
    ):
        client = Client(enforce_csrf_checks=True)
        client.force_login(scientist)
        response = client.post(
            "/models/iris/upload/", {"file": as_upload(onnx_path(onnx_files.linear_regressor()))}
        )
        assert response.status_code == 403


def test_compare_page(registered, scientist, scientist_actor, onnx_path):
    path = onnx_path(onnx_files.linear_regressor())
    ready(register(scientist_actor, registered, path, metrics={"rmse": 0.5}))
    ready(register(scientist_actor, registered, path, metrics={"rmse": 0.4}))
    page = login(scientist).get("/models/iris/compare/?a=1&b=2").content.decode()
    assert "<td>metrics</td><td>rmse</td><td>0.5</td><td>0.4</td><td>−0.1</td>" in page
    same = login(scientist).get("/models/iris/compare/?a=1&b=1").content.decode()
    assert "do not differ" in same


def test_api_session_calls_need_a_csrf_token(registered, scientist, onnx_path):
    client = Client(enforce_csrf_checks=True)
    client.force_login(scientist)
    before = stored_files()
    response = client.post(
        "/api/v1/models/iris/versions/",
        {"file": as_upload(onnx_path(onnx_files.linear_regressor()))},
    )
    assert response.status_code == 403
    assert stored_files() == before and not ModelVersion.objects.exists()
