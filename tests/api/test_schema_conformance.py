"""Every operation's real answers match the OpenAPI schema: documented status codes, content
types, headers and bodies (schemathesis response checks), as an authenticated team admin.

The operations are read from the schema at collection time, so any operation added later is
covered without editing this file. Bounded and deterministic: derandomized examples.
"""

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import token_client

EXAMPLES_PER_OPERATION = 8
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _schema():
    document = SchemaGenerator().get_schema(request=None, public=True)
    loaded = schemathesis.openapi.from_dict(document)
    loaded.app = WSGIHandler()
    return loaded


schema = _schema()


# Operations that may answer free-form objects: none. New operations are typed.
FREE_FORM_OPERATIONS: set[str] = set()
FREE_FORM = ({"type": "object", "additionalProperties": {}}, {"type": "object"})


def _json_schemas(operation) -> list:
    raw = operation.definition.raw
    bodies = list(raw.get("requestBody", {}).get("content", {}).values())
    bodies += [
        content
        for status, response in raw["responses"].items()
        if status.startswith("2")
        for content in response.get("content", {}).values()
    ]
    return [body.get("schema") for body in bodies]


def test_every_operation_is_typed_and_documents_its_errors():
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 60
    free_form = {
        f"{operation.method.upper()} {operation.path}"
        for operation in operations
        if any(body in FREE_FORM for body in _json_schemas(operation))
    }
    assert free_form <= FREE_FORM_OPERATIONS, sorted(free_form - FREE_FORM_OPERATIONS)
    for operation in operations:
        responses = operation.definition.raw["responses"]
        for status in ("400", "401", "403", "404"):
            error = responses[status]["content"]["application/json"]["schema"]
            assert error == {"$ref": "#/components/schemas/Error"}, (operation.path, status)


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
def test_every_answer_matches_the_schema(case, bearer):
    response = case.call(headers={"Authorization": bearer, "Host": "localhost"})
    case.validate_response(response, checks=CHECKS)
