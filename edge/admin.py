"""Admin for ops: enrollment codes, devices and fleet rollouts, read-only, with actions that call
the same services (and audit) as the pages: rotate or revoke a device, cancel a fleet rollout.
"""

from django.contrib import admin
from django.shortcuts import render

from accounts.actor import Actor
from common.admin import ReadOnlyAdmin, run_admin_action
from edge.models import EdgeDevice, EdgeRollout, EnrollmentCode


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
        from edge.services import device_credentials_rotate

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
            "admin/edge/device_credentials.html",
            {**self.admin_site.each_context(request), "rotated": rotated},
        )
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke the selected devices' tokens")
    def revoke(self, request, queryset):
        from edge.services import device_revoke

        actor = Actor.for_admin_site(request)
        run_admin_action(
            self, request, queryset, "Revoked", lambda d: device_revoke(actor=actor, device=d)
        )


@admin.register(EdgeRollout)
class EdgeRolloutAdmin(ReadOnlyAdmin):
    list_display = ["pk", "target", "to_version", "status", "current_wave", "created_at"]
    list_filter = ["status", "target"]
    actions = ["cancel"]

    @admin.action(description="Cancel the selected fleet rollouts")
    def cancel(self, request, queryset):
        from edge.services import edge_rollout_cancel

        actor = Actor.for_admin_site(request)
        run_admin_action(
            self, request, queryset.select_related("target"), "Cancelled",
            lambda rollout: edge_rollout_cancel(actor=actor, rollout=rollout),
        )  # fmt: skip
