from django.urls import path

from edge import views

app_name = "edge"

urlpatterns = [
    path("fleet/", views.fleet_list, name="fleet-list"),
    path("fleet/<slug:name>/", views.fleet_detail, name="fleet-detail"),
    path("fleet/<slug:name>/codes/", views.fleet_enrollment_code, name="fleet-code"),
    path("fleet/<slug:name>/rollouts/", views.fleet_rollout_create, name="fleet-rollout-create"),
    path(
        "fleet/<slug:name>/rollouts/<int:rollout_id>/<str:action>/",
        views.fleet_rollout_action,
        name="fleet-rollout-action",
    ),
    path(
        "fleet/<slug:name>/devices/<str:device>/revoke/",
        views.fleet_device_revoke,
        name="fleet-device-revoke",
    ),
]
