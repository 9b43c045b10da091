"""The OpenAPI schema as schemathesis cases against the in-process WSGI app, and the fixtures a
case needs: the security suite's world and an authenticated team admin's bearer header.

Shared by the schema-conformance tests (tests/api) and the no-5xx attack (tests/security).
"""

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator

from tests.conftest import token_client


def wsgi_schema():
    document = SchemaGenerator().get_schema(request=None, public=True)
    loaded = schemathesis.openapi.from_dict(document)
    loaded.app = WSGIHandler()
    return loaded


@pytest.fixture
def settings_world(world):
    # As Django's test client does: the request must not close the test transaction's connection.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield world
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def bearer(team, admin_member, settings_world):
    client = token_client(admin_member, team)
    return client._credentials["HTTP_AUTHORIZATION"]
