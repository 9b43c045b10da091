"""Schemathesis over the OpenAPI schema, in process against the WSGI app, as an authenticated
team admin: whatever it sends, no operation answers 5xx.

Bounded and deterministic: a fixed number of derandomized examples per operation.
"""

import pytest
from hypothesis import HealthCheck, settings

from tests.openapi_cases import wsgi_schema

EXAMPLES_PER_OPERATION = 20


schema = wsgi_schema()


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
