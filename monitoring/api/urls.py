"""Monitoring API paths. Explicit paths, not a router: the deployments router owns `endpoints/`
with `lookup_field="name"`, and these sub-resources must not clash with it."""

from django.urls import path

from monitoring.api import views

urlpatterns = [
    path("endpoints/<str:name>/metrics/", views.endpoint_metrics, name="api-endpoint-metrics"),
    path("endpoints/<str:name>/drift/", views.endpoint_drift, name="api-endpoint-drift"),
    path(
        "endpoints/<str:name>/predictions/",
        views.prediction_ingest,
        name="api-endpoint-predictions",
    ),
    path(
        "endpoints/<str:name>/prediction-log/",
        views.endpoint_prediction_log,
        name="api-endpoint-prediction-log",
    ),
    path("endpoints/<str:name>/feedback/", views.endpoint_feedback, name="api-endpoint-feedback"),
    path("endpoints/<str:name>/shadow/", views.endpoint_shadow, name="api-endpoint-shadow"),
    path(
        "endpoints/<str:name>/rollback-policy/",
        views.endpoint_rollback_policy,
        name="api-endpoint-rollback-policy",
    ),
    path(
        "endpoints/<str:name>/rollback-policy/evaluations/",
        views.endpoint_policy_evaluations,
        name="api-endpoint-policy-evaluations",
    ),
    path("experiments/", views.experiment_list, name="api-experiment-list"),
    path("experiments/<int:pk>/", views.experiment_detail, name="api-experiment-detail"),
    path(
        "experiments/<int:pk>/start/",
        views.experiment_action,
        {"action": "start"},
        name="api-experiment-start",
    ),
    path(
        "experiments/<int:pk>/stop/",
        views.experiment_action,
        {"action": "stop"},
        name="api-experiment-stop",
    ),
]
