"""Fixtures of the security suite: a fully populated team and clients for every role."""

import pytest
from django.test import Client

from tests.deployments.conftest import (  # noqa: F401 (fixtures the access tests reuse)
    adder_model,
    dev_target,
    runtime_processes,
    versions,
)
from tests.openapi_cases import bearer, settings_world  # noqa: F401 (the schemathesis fixtures)
from tests.security.world import build_world


@pytest.fixture
def world(team, admin_member, settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "artifacts": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "artifacts")},
        },
    }
    from django.core.files.storage import storages

    storages._storages.pop("artifacts", None)
    yield build_world(team, admin_member)
    storages._storages.pop("artifacts", None)


def session_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client
