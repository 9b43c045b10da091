"""Monitoring API paths. Explicit paths, not a router: the deployments router owns `endpoints/`
with `lookup_field="name"`, and these sub-resources must not clash with it."""

from django.urls import path

from monitoring.api import views

urlpatterns = [
    path("endpoints/<str:name>/metrics/", views.endpoint_metrics, name="api-endpoint-metrics"),
    path("endpoints/<str:name>/drift/", views.endpoint_drift, name="api-endpoint-drift"),
]
