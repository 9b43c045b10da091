from django.urls import path

from edge.api import views

# Edge fleets: people manage codes, devices and rollouts; devices use the edge/ paths.
urlpatterns = [
    path("targets/<slug:name>/enrollment-codes/", views.enrollment_code_create),
    path("targets/<slug:name>/devices/", views.device_list),
    path("targets/<slug:name>/devices/<str:device>/revoke/", views.device_revoke),
    path("targets/<slug:name>/rollouts/", views.rollout_list),
    path("edge/rollouts/<int:rollout_id>/", views.rollout_detail),
    path("edge/rollouts/<int:rollout_id>/cancel/", views.rollout_cancel),
    path("edge/rollouts/<int:rollout_id>/retry/", views.rollout_retry),
    path("edge/enroll/", views.enroll),
    path("edge/desired/", views.desired),
    path("edge/heartbeat/", views.heartbeat),
    path("edge/artifacts/<int:version_id>/", views.artifact, name="edge-artifact"),
]
