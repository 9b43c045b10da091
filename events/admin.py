"""Admin for events, webhooks and deliveries.

Allowing a webhook's host to resolve to internal addresses is an admin action (staff only).
"""

from django.contrib import admin

from accounts.actor import Actor
from common.admin import ReadOnlyAdmin, run_admin_action
from events import services
from events.models import Event, Webhook, WebhookDelivery


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ["kind", "team", "created_at"]
    list_filter = ["kind"]


@admin.register(Webhook)
class WebhookAdmin(ReadOnlyAdmin):
    list_display = ["name", "team", "url", "is_active", "allowed_host"]
    list_filter = ["team", "is_active"]
    search_fields = ["name", "url"]
    fields = ["team", "name", "url", "events", "is_active", "allowed_host", "allowed_by"]
    actions = ["allow_host", "disallow_host"]

    @admin.action(description="Allow the host of the selected webhooks to be internal")
    def allow_host(self, request, queryset):
        actor = Actor.for_admin_site(request)
        run_admin_action(
            self,
            request,
            queryset,
            "Allowed the host of",
            lambda hook: services.webhook_allow_host(actor=actor, webhook=hook, allow=True),
        )

    @admin.action(description="Remove the internal-host override")
    def disallow_host(self, request, queryset):
        actor = Actor.for_admin_site(request)
        run_admin_action(
            self,
            request,
            queryset,
            "Removed the override of",
            lambda hook: services.webhook_allow_host(actor=actor, webhook=hook, allow=False),
        )


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = ["event", "webhook", "status", "attempts", "created_at", "response_status"]
    list_filter = ["status", "event"]
