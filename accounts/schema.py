"""Tells drf-spectacular how the bearer-token authentications appear in the OpenAPI schema."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "An API token from createtoken."}


class DeviceTokenScheme(OpenApiAuthenticationExtension):
    target_class = "edge.api.views.DeviceTokenAuthentication"
    name = "deviceAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An edge device's token, issued once at enrollment.",
        }
