"""A client generated from the OpenAPI schema (openapi-python-client, as API users would) works
against a live server: it lists, creates and uploads, and reads the typed error body."""

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from drf_spectacular.generators import SchemaGenerator

from registry.models import ModelVersion, RegisteredModel
from tests.conftest import token_client
from tests.registry import onnx_files

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def generate_client(folder: Path) -> None:
    """Write the schema and generate the `modeldeck_openapi_client` package into `folder`."""
    document = SchemaGenerator().get_schema(request=None, public=True)
    (folder / "schema.json").write_text(json.dumps(document))
    (folder / "config.yaml").write_text(
        "project_name_override: modeldeck-openapi-client\n"
        "package_name_override: modeldeck_openapi_client\n"
        "post_hooks: []\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--path",
            str(folder / "schema.json"),
            "--config",
            str(folder / "config.yaml"),
            "--meta",
            "none",
            "--output-path",
            str(folder / "modeldeck_openapi_client"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (folder / "modeldeck_openapi_client" / "client.py").exists()


@pytest.fixture
def generated(tmp_path):
    generate_client(tmp_path)
    sys.path.insert(0, str(tmp_path))
    yield
    sys.path.remove(str(tmp_path))
    for name in [name for name in sys.modules if name.startswith("modeldeck_openapi_client")]:
        del sys.modules[name]


def test_a_generated_client_lists_creates_and_uploads(generated, live_server, team, scientist):
    from modeldeck_openapi_client import AuthenticatedClient
    from modeldeck_openapi_client.api.v1 import (
        v1_models_create,
        v1_models_list,
        v1_models_versions_create,
        v1_models_versions_list,
    )
    from modeldeck_openapi_client.models import (
        Error,
        ModelCreateRequest,
        PaginatedRegisteredModelList,
        VersionCreateRequest,
    )
    from modeldeck_openapi_client.models import (
        RegisteredModel as ClientModel,
    )
    from modeldeck_openapi_client.types import File

    token = token_client(scientist, team)._credentials["HTTP_AUTHORIZATION"].split(" ", 1)[1]
    client = AuthenticatedClient(
        base_url=live_server.url, token=token, raise_on_unexpected_status=True
    )

    created = v1_models_create.sync(
        client=client, body=ModelCreateRequest(name="iris", team="alpha")
    )
    assert isinstance(created, ClientModel)
    assert (created.name, created.team, created.created_by) == ("iris", "alpha", scientist.username)

    duplicate = v1_models_create.sync_detailed(client=client, body=ModelCreateRequest(name="iris"))
    assert duplicate.status_code == 409 and isinstance(duplicate.parsed, Error)
    assert duplicate.parsed.error == "A model named 'iris' already exists (names are global)."

    payload = onnx.ModelProto.SerializeToString(onnx_files.linear_regressor())
    upload = VersionCreateRequest(
        file=File(payload=payload, file_name="model.onnx", mime_type="application/octet-stream"),
        git_commit="0123abc",
    )
    version = v1_models_versions_create.sync(client=client, model_name="iris", body=upload)
    assert (version.number, version.git_commit, version.derived_from) == (1, "0123abc", None)

    listed = v1_models_list.sync(client=client)
    assert isinstance(listed, PaginatedRegisteredModelList)
    assert (listed.count, [m.name for m in listed.results]) == (1, ["iris"])
    versions = v1_models_versions_list.sync(client=client, model_name="iris")
    assert [(v.number, v.size) for v in versions.results] == [(1, len(payload))]
    stored = ModelVersion.objects.get(model=RegisteredModel.objects.get(name="iris"))
    assert stored.git_commit == "0123abc"
