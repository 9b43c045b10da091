"""The REST API: one router per app under /api/v1/, the OpenAPI schema and its docs."""

from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from common.views import api_not_found

urlpatterns = [
    path("v1/", include("accounts.api.urls")),
    path("v1/", include("registry.api.urls")),
    path("v1/", include("deployments.api.urls")),
    path("v1/", include("monitoring.api.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    # Last: a path that names no operation answers the JSON error body, not an HTML page.
    re_path(r"^(?P<path>[\s\S]*)$", api_not_found, name="api-not-found"),
]
