"""Webhook pages (namespace `events`)."""

from django.urls import path

from events import views

app_name = "events"

urlpatterns = [
    path("webhooks/", views.webhook_list, name="webhook-list"),
    path("webhooks/new/", views.webhook_create, name="webhook-create"),
    path("webhooks/<int:pk>/", views.webhook_detail, name="webhook-detail"),
]
for action in ("delete", "rotate", "ping", "allow-host", "disallow-host"):
    urlpatterns.append(
        path(
            f"webhooks/<int:pk>/{action}/",
            views.webhook_action,
            {"action": action},
            name=f"webhook-{action}",
        )
    )
