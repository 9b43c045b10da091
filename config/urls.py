"""Top-level URLs: pages, the API, the admin, health."""

from django.contrib import admin
from django.urls import include, path

from common import views as common_views

urlpatterns = [
    path("healthz", common_views.healthz, name="healthz"),
    path("accounts/", include("accounts.urls")),
    path("oidc/", include("accounts.oidc")),  # single sign-on (OpenID Connect)
    path("", include("registry.urls")),  # /models/… and /batch-jobs/…
    path("", include("deployments.urls")),
    path("", include("edge.urls")),  # /fleet/…
    path("", include("events.urls")),  # /webhooks/…
    path("", include("monitoring.urls")),
    path("api/", include("config.api_urls")),
    path("admin/", admin.site.urls),
]
