from rest_framework.routers import SimpleRouter

from deployments.api import views

router = SimpleRouter()
router.register("targets", views.TargetViewSet, basename="target")
router.register("endpoints", views.EndpointViewSet, basename="endpoint")
router.register("builds", views.BuildViewSet, basename="build")

urlpatterns = [*router.urls]
