"""The REST API: one router per app under /api/v1/, the OpenAPI schema and its docs."""

from django.contrib.auth.decorators import login_required
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

urlpatterns = [
    path("v1/", include("accounts.api.urls")),
    path("v1/", include("registry.api.urls")),
    path("v1/", include("deployments.api.urls")),
    path("v1/", include("edge.api.urls")),
    path("v1/", include("monitoring.api.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # A page for people: signed out, it sends them to sign in instead of a bare 401.
    path(
        "docs/",
        login_required(SpectacularSwaggerSplitView.as_view(url_name="api-schema")),
        name="api-docs",
    ),
]
