"""The API tests work on the security suite's world: one team with a model, versions, aliases,
a target, an endpoint with releases and events, a webhook, an experiment and a policy."""

from tests.openapi_cases import bearer, settings_world  # noqa: F401  (fixtures)
from tests.security.conftest import world  # noqa: F401  (the fixture)
