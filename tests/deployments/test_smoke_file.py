"""Docker images carry the version's smoke.json (reference-row request) in their model folder."""

import json

import pytest

from deployments.targets.docker import images
from tests.deployments.test_docker_images import unpack, wheelhouse  # noqa: F401 (fixture)

SMOKE = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 1], "data": [1.5, 2.5]}]}


@pytest.mark.django_db
def test_build_context_adds_smoke_json_only_when_the_version_has_reference_rows(
    wheelhouse,  # noqa: F811
    versions,
):
    plain = images.build_context(version=versions[1])
    assert "model/smoke.json" not in plain.members
    version = versions[2]
    version.smoke_input = SMOKE
    version.save()
    context = images.build_context(version=version)
    assert context.members[-1] == "model/smoke.json"
    assert json.loads(unpack(context).extractfile("model/smoke.json").read()) == SMOKE
