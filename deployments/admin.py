"""Admin for ops: targets, and read-only views of endpoints, releases, progress and processes.

Endpoint changes go through the pages and the API (services with audit); the admin inspects.
"""

from django.contrib import admin
from django.shortcuts import render

from accounts.actor import Actor
from common.admin import ReadOnlyAdmin, run_admin_action
from deployments.models import (
    Build,
    DeploymentEvent,
    EdgeDevice,
    EdgeRollout,
    Endpoint,
    EnrollmentCode,
    LocalProcess,
    ReconcileLease,
    Release,
    Target,
)


@admin.register(Target)
class TargetAdmin(ReadOnlyAdmin):
    list_display = ["name", "team", "kind", "environment", "created_at"]
    list_filter = ["kind", "environment", "team"]
    search_fields = ["name", "description"]


@admin.register(Endpoint)
class EndpointAdmin(ReadOnlyAdmin):
    list_display = ["name", "team", "target", "status", "generation", "url", "last_reconciled_at"]
    list_filter = ["status", "team", "target"]
    search_fields = ["name"]
    exclude = ["gateway_token"]
    actions = ["rotate_gateway_token"]

    @admin.action(description="Rotate the selected endpoints' gateway admin tokens")
    def rotate_gateway_token(self, request, queryset):
        from deployments.access import endpoint_gateway_token_rotate

        actor = Actor.for_admin_site(request)
        run_admin_action(
            self,
            request,
            queryset,
            "Rotated (the gateways restart with the new token)",
            lambda e: endpoint_gateway_token_rotate(actor=actor, endpoint=e),
        )


@admin.register(Release)
class ReleaseAdmin(ReadOnlyAdmin):
    list_display = ["endpoint", "number", "reason", "actor_label", "created_at", "live_at"]
    list_filter = ["reason"]
    search_fields = ["endpoint__name", "actor_label"]


@admin.register(DeploymentEvent)
class DeploymentEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "endpoint", "build", "level", "message"]
    list_filter = ["level"]
    search_fields = ["endpoint__name", "message"]


@admin.register(Build)
class BuildAdmin(ReadOnlyAdmin):
    list_display = ["id", "version", "target", "status", "progress", "created_at"]
    list_filter = ["status"]


@admin.register(LocalProcess)
class LocalProcessAdmin(ReadOnlyAdmin):
    list_display = ["endpoint_id", "key", "role", "version", "host", "port", "pid", "restarts"]
    list_filter = ["role", "host"]


@admin.register(ReconcileLease)
class ReconcileLeaseAdmin(ReadOnlyAdmin):
    list_display = ["endpoint", "holder", "expires_at"]


@admin.register(EnrollmentCode)
class EnrollmentCodeAdmin(ReadOnlyAdmin):
    list_display = ["target", "created_at", "expires_at", "used_at", "created_by"]
    list_filter = ["target"]
    exclude = ["digest"]


@admin.register(EdgeDevice)
class EdgeDeviceAdmin(ReadOnlyAdmin):
    list_display = [
        "name",
        "target",
        "health",
        "current_version",
        "previous_version",
        "agent_version",
        "last_seen_at",
        "revoked_at",
    ]
    list_filter = ["health", "target"]
    search_fields = ["name"]
    exclude = ["token_digest", "manifest_key"]
    actions = ["revoke", "rotate_credentials"]

    @admin.action(description="Give the selected devices a new token and manifest key")
    def rotate_credentials(self, request, queryset):
        """Rotate, then show the new credentials once on a page of their own (never in a
        message, which would put them in a cookie)."""
        from deployments.edge.services import device_credentials_rotate

        actor = Actor.for_admin_site(request)
        rotated = []

        def rotate(device):
            device, token, key = device_credentials_rotate(actor=actor, device=device)
            rotated.append({"device": device, "token": token, "key": key})

        run_admin_action(self, request, queryset, "Rotated", rotate)
        if not rotated:
            return None
        response = render(
            request,
            "admin/deployments/device_credentials.html",
            {**self.admin_site.each_context(request), "rotated": rotated},
        )
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke the selected devices' tokens")
    def revoke(self, request, queryset):
        from deployments.edge.services import device_revoke

        actor = Actor.for_admin_site(request)
        run_admin_action(
            self, request, queryset, "Revoked", lambda d: device_revoke(actor=actor, device=d)
        )


@admin.register(EdgeRollout)
class EdgeRolloutAdmin(ReadOnlyAdmin):
    list_display = ["pk", "target", "to_version", "status", "current_wave", "created_at"]
    list_filter = ["status", "target"]
