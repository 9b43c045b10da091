"""Schemathesis over the OpenAPI schema, in process against the WSGI app, as an authenticated
team admin: whatever it sends, no operation answers 5xx.

Bounded and deterministic: a fixed number of derandomized examples per operation.
"""

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings

from tests.conftest import token_client

EXAMPLES_PER_OPERATION = 20


def _schema():
    document = SchemaGenerator().get_schema(request=None, public=True)
    loaded = schemathesis.openapi.from_dict(document)
    loaded.app = WSGIHandler()
    return loaded


schema = _schema()


@pytest.fixture
def bearer(team, admin_member, settings_world):
    client = token_client(admin_member, team)
    return client._credentials["HTTP_AUTHORIZATION"]


@pytest.fixture
def settings_world(world):
    # As Django's test client does: the request must not close the test transaction's connection.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield world
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.mark.django_db(transaction=False)
@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_operation_answers_5xx(case, bearer):
    response = case.call(headers={"Authorization": bearer, "Host": "localhost"})
    assert response.status_code < 500, (case.method, case.formatted_path, response.text[:500])
