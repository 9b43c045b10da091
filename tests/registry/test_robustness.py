"""Hostile URLs and parameters get a 4xx on SQLite and PostgreSQL alike, never a 500."""

import pytest
from django.conf import settings
from django.test import Client

from accounts.actor import Actor
from registry import services
from registry.models import Artifact
from tests.registry import onnx_files
from tests.registry.conftest import register

pytestmark = pytest.mark.django_db

NASTY_API_GETS = [
    "/api/v1/models/%00/",
    "/api/v1/models/iris%00/versions/",
    "/api/v1/models/..%2F..%2Fetc%2Fpasswd/",
    "/api/v1/models/%2e%2e/",
    "/api/v1/models/iris/versions/99999999999999999999/",
    "/api/v1/models/iris/versions/compare/?a=1&b=99999999999999",
    "/api/v1/models/iris/versions/compare/?a=%00&b=1",
    "/api/v1/models/iris/versions/compare/?a=%D9%A1&b=1",
    "/api/v1/models/iris/aliases/%00/",
    "/api/v1/models/iris/aliases/%00/history/",
    "/api/v1/models/iris/aliases/candidate/history/?at=%00",
    "/api/v1/models/iris/aliases/candidate/history/?at=9999-99-99",
    "/api/v1/models/?tag=a%00=b",
    "/api/v1/models/?archived=maybe",
]


@pytest.fixture
def iris(registered, scientist_actor, onnx_path):
    version = register(scientist_actor, registered, onnx_path(onnx_files.linear_regressor()))
    system = Actor.system("tests")
    services.version_mark_validating(actor=system, version_id=version.pk)
    services.version_record_validation(actor=system, version_id=version.pk, ok=True)
    services.alias_set(actor=scientist_actor, model=registered, name="candidate", version_number=1)
    return registered


@pytest.mark.parametrize("url", NASTY_API_GETS)
def test_hostile_api_reads_answer_4xx_or_nothing(iris, scientist_api, url):
    response = scientist_api.get(url)
    assert response.status_code < 500
    if response.status_code == 200:
        assert response.json()["results"] == []


def test_nul_in_search_is_ignored(iris, scientist_api):
    for query in ("?q=%00", "?tag=%00", "?q=ir%00is"):
        response = scientist_api.get(f"/api/v1/models/{query}")
        assert response.status_code == 200
        assert [item["name"] for item in response.json()["results"]] == ["iris"]


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("put", "/api/v1/models/iris/aliases/%00/", {"version": 1}),
        ("put", "/api/v1/models/iris/aliases/candidate/", {"version": 99999999999999}),
        ("put", "/api/v1/models/iris/aliases/candidate/", {"version": "1\x00"}),
        ("put", "/api/v1/models/iris/aliases/candidate/", {"version": 1, "reason": "a\x00b"}),
        ("delete", "/api/v1/models/iris/aliases/%00/", None),
        ("post", "/api/v1/models/iris/versions/1/approve/", {"decision": "approved\x00"}),
        ("post", "/api/v1/models/", {"name": "iris\x00"}),
        ("post", "/api/v1/models/", {"name": "x", "tags": {"a\x00": "b"}}),
        ("post", "/api/v1/models/", {"name": "x", "tags": {"a": "b\x00"}}),
        ("post", "/api/v1/models/", {"name": "x", "description": "a\x00"}),
        ("patch", "/api/v1/models/iris/", {"tags": "not an object"}),
    ],
)
def test_hostile_api_writes_answer_4xx(iris, deployer_api, method, url, body):
    response = getattr(deployer_api, method)(url, body, format="json")
    assert 400 <= response.status_code < 500, response.content
    assert set(response.json()) == {"error", "detail"}


def test_hostile_upload_fields_answer_4xx(iris, scientist_api, onnx_path):
    path = onnx_path(onnx_files.linear_regressor())
    for fields in (
        {"params": '{"a": "x\\u0000y"}'},
        {"metrics": '{"a\\u0000": 1}'},
        {"derived_from": "99999999999999"},
        {"source": "http://x/\x00"},
    ):
        with open(path, "rb") as stream:
            response = scientist_api.post(
                "/api/v1/models/iris/versions/", {"file": stream, **fields}, format="multipart"
            )
        assert response.status_code == 400, (fields, response.content)


def test_hostile_page_urls_answer_404(iris, scientist):
    client = Client()
    client.force_login(scientist)
    for url in (
        "/models/%00/",
        "/models/iris/versions/99999999999999999999/",
        "/models/iris/versions/1/files/%00/",
        "/models/iris/compare/?a=1&b=%00",
    ):
        assert client.get(url).status_code in (200, 404), url
    response = client.post("/models/iris/aliases/%00/delete/", follow=True)
    assert response.status_code == 200
    assert b"has no alias" in response.content


def test_missing_stored_file_answers_404_not_500(iris, scientist_api):
    artifact = Artifact.objects.get()
    (settings.ARTIFACT_ROOT / artifact.storage_key).unlink()
    response = scientist_api.get("/api/v1/models/iris/versions/1/download/")
    assert response.status_code == 404
    assert response.json()["error"] == (
        "The stored file of iris:1 is missing from the artifact storage."
    )


def test_nul_in_what_a_model_declares_is_stored_safely(registered, scientist_actor, onnx_path):
    version = register(scientist_actor, registered, onnx_path(onnx_files.linear_regressor()))
    system = Actor.system("tests")
    services.version_mark_validating(actor=system, version_id=version.pk)
    recorded = services.version_record_validation(
        actor=system,
        version_id=version.pk,
        ok=True,
        signature={"inputs": [{"name": "x\x00y", "datatype": "FP32", "shape": [1]}], "outputs": []},
        report={"producer": "evil\x00"},
    )
    assert recorded.signature["inputs"][0]["name"] == "x\N{REPLACEMENT CHARACTER}y"
