from django.urls import path
from rest_framework.routers import SimpleRouter

from accounts.api import views

router = SimpleRouter()
router.register("audit", views.AuditEventViewSet, basename="audit")

urlpatterns = [path("me/", views.me, name="api-me"), *router.urls]
