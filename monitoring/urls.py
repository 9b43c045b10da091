"""Monitoring pages (namespace `monitoring`), plus the un-namespaced home, experiments and the
dashboard's own Prometheus /metrics."""

from django.urls import include, path

from monitoring import views

monitoring_patterns = [
    path(
        "endpoints/<str:name>/monitoring/",
        views.endpoint_monitoring,
        name="endpoint-monitoring",
    ),
    path("endpoints/<str:name>/drift/", views.endpoint_drift, name="endpoint-drift"),
    path("endpoints/<str:name>/guardrails/", views.endpoint_guardrails, name="endpoint-guardrails"),
    path(
        "endpoints/<str:name>/guardrails/policy/",
        views.rollback_policy_set,
        name="rollback-policy-set",
    ),
    path("endpoints/<str:name>/alerts/", views.endpoint_alerts, name="endpoint-alerts"),
    path(
        "endpoints/<str:name>/alerts/rules/",
        views.alert_rule_create,
        name="alert-rule-create",
    ),
    path(
        "endpoints/<str:name>/alerts/rules/<int:pk>/delete/",
        views.alert_rule_delete,
        name="alert-rule-delete",
    ),
    path(
        "endpoints/<str:name>/alerts/rules/<int:pk>/toggle/",
        views.alert_rule_toggle,
        name="alert-rule-toggle",
    ),
    path("alerts/", views.alert_list, name="alert-list"),
]

urlpatterns = [
    path("", views.home, name="home"),
    path("experiments/", views.experiment_list, name="experiment-list"),
    path("experiments/new/", views.experiment_create, name="experiment-create"),
    path("experiments/<int:pk>/", views.experiment_detail, name="experiment-detail"),
    path(
        "experiments/<int:pk>/start/",
        views.experiment_action,
        {"action": "start"},
        name="experiment-start",
    ),
    path(
        "experiments/<int:pk>/stop/",
        views.experiment_action,
        {"action": "stop"},
        name="experiment-stop",
    ),
    path("metrics", views.prometheus_metrics, name="prometheus-metrics"),
    path("", include((monitoring_patterns, "monitoring"))),
]
