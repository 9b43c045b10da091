from django.urls import path
from rest_framework.routers import SimpleRouter

from deployments.api import keys, views

router = SimpleRouter()
router.register("targets", views.TargetViewSet, basename="target")
router.register("endpoints", views.EndpointViewSet, basename="endpoint")
router.register("builds", views.BuildViewSet, basename="build")

# Inference keys of an endpoint.
key_urls = [
    path("endpoints/<slug:name>/keys/", keys.key_list),
    path("endpoints/<slug:name>/keys/<int:key_id>/", keys.key_revoke),
]

urlpatterns = [*router.urls, *key_urls]
