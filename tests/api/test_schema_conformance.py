"""Every operation's real answers match the OpenAPI schema: documented status codes, content
types, headers and bodies (schemathesis response checks), as an authenticated team admin.

The operations are read from the schema at collection time, so any operation added later is
covered without editing this file. Bounded and deterministic: derandomized examples.
"""

import pytest
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.openapi_cases import wsgi_schema

EXAMPLES_PER_OPERATION = 8
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


schema = wsgi_schema()


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
