from django.urls import path
from rest_framework.routers import SimpleRouter

from deployments.api import edge, keys, views

router = SimpleRouter()
router.register("targets", views.TargetViewSet, basename="target")
router.register("endpoints", views.EndpointViewSet, basename="endpoint")
router.register("builds", views.BuildViewSet, basename="build")

# Edge fleets: people manage codes, devices and rollouts; devices use the edge/ paths.
edge_urls = [
    path("targets/<slug:name>/enrollment-codes/", edge.enrollment_code_create),
    path("targets/<slug:name>/devices/", edge.device_list),
    path("targets/<slug:name>/devices/<str:device>/revoke/", edge.device_revoke),
    path("targets/<slug:name>/rollouts/", edge.rollout_list),
    path("edge/rollouts/<int:rollout_id>/", edge.rollout_detail),
    path("edge/rollouts/<int:rollout_id>/cancel/", edge.rollout_cancel),
    path("edge/rollouts/<int:rollout_id>/retry/", edge.rollout_retry),
    path("edge/enroll/", edge.enroll),
    path("edge/desired/", edge.desired),
    path("edge/heartbeat/", edge.heartbeat),
    path("edge/artifacts/<int:version_id>/", edge.artifact, name="edge-artifact"),
]

# Inference keys of an endpoint.
key_urls = [
    path("endpoints/<slug:name>/keys/", keys.key_list),
    path("endpoints/<slug:name>/keys/<int:key_id>/", keys.key_revoke),
]

urlpatterns = [*router.urls, *edge_urls, *key_urls]
