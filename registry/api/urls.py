from django.urls import re_path
from rest_framework.routers import SimpleRouter

from registry.api import triton, views

# Model names may contain dots, so nested routes take any segment and the lookup decides.
MODEL = r"models/(?P<model_name>[^/]+)"

router = SimpleRouter()
router.register("models", views.RegisteredModelViewSet, basename="model")
router.register(f"{MODEL}/versions", views.ModelVersionViewSet, basename="model-version")
router.register(f"{MODEL}/aliases", views.AliasViewSet, basename="model-alias")
router.register("batch-jobs", views.BatchJobViewSet, basename="batch-job")

urlpatterns = [
    *router.urls,
    re_path(f"^{MODEL}/versions/(?P<number>[0-9]{{1,9}})/triton/$", triton.version_triton_export),
]
