"""Admin for events, webhooks and deliveries.

Allowing a webhook's host to resolve to internal addresses is an admin action (staff only).
"""

from django.contrib import admin, messages

from accounts.actor import Actor
from common.admin import ReadOnlyAdmin
from events import services
from events.models import Event, Webhook, WebhookDelivery


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ["kind", "team", "created_at"]
    list_filter = ["kind"]


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    list_display = ["name", "team", "url", "is_active", "allowed_host"]
    list_filter = ["team", "is_active"]
    search_fields = ["name", "url"]
    fields = ["team", "name", "url", "events", "is_active", "allowed_host", "allowed_by"]
    readonly_fields = ["allowed_host", "allowed_by"]
    actions = ["allow_host", "disallow_host"]

    @admin.action(description="Allow the host of the selected webhooks to be internal")
    def allow_host(self, request, queryset):
        actor = Actor.from_request(request)
        for webhook in queryset:
            services.webhook_allow_host(actor=actor, webhook=webhook, allow=True)
        messages.success(request, f"Allowed {queryset.count()} host(s).")

    @admin.action(description="Remove the internal-host override")
    def disallow_host(self, request, queryset):
        actor = Actor.from_request(request)
        for webhook in queryset:
            services.webhook_allow_host(actor=actor, webhook=webhook, allow=False)
        messages.success(request, f"Removed {queryset.count()} override(s).")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ["event", "webhook", "status", "attempts", "created_at", "response_status"]
    list_filter = ["status", "event"]
    readonly_fields = [field.name for field in WebhookDelivery._meta.fields]
