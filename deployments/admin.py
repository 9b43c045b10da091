"""Admin for ops: targets (edited and deleted through their services), and read-only views of
endpoints, releases, progress and processes with actions that call the same services (and
audit) as the pages: stop an endpoint, roll back to a release (fleets: edge/admin.py).
"""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied

from accounts.actor import Actor
from common.admin import ReadOnlyAdmin, run_admin_action
from common.errors import ApplicationError
from deployments import services
from deployments.models import (
    Build,
    DeploymentEvent,
    Endpoint,
    LocalProcess,
    ReconcileLease,
    Release,
    Target,
)


class TargetForm(forms.ModelForm):
    """Environment, settings and description of a target, checked by the service's rules."""

    class Meta:
        model = Target
        fields = ["environment", "config", "description"]

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        try:
            services.target_changes(
                target=Target.objects.get(pk=self.instance.pk),
                environment=cleaned.get("environment"),
                config=cleaned.get("config"),
                description=cleaned.get("description", ""),
            )
        except ApplicationError as error:
            raise forms.ValidationError(error.message) from None
        return cleaned


@admin.register(Target)
class TargetAdmin(admin.ModelAdmin):
    """Targets are created on the targets page or the API (they need a team admin's choice of
    kind); here ops change their settings or delete unused ones, through the services."""

    list_display = ["name", "team", "kind", "environment", "created_at"]
    list_filter = ["kind", "environment", "team"]
    search_fields = ["name", "description"]
    form = TargetForm
    readonly_fields = ["name", "team", "kind"]
    fields = ["name", "team", "kind", "environment", "config", "description"]
    actions = ["delete_targets"]

    def has_add_permission(self, request):
        return False

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # Django's bulk delete skips the service
        return actions

    def save_model(self, request, obj, form, change):
        services.target_update(
            actor=Actor.for_admin_site(request),
            target=obj,
            environment=form.cleaned_data["environment"],
            config=form.cleaned_data["config"],
            description=form.cleaned_data["description"],
        )

    def delete_view(self, request, object_id, extra_context=None):
        target = self.get_object(request, object_id)
        if request.method == "POST" and target is not None:
            try:
                services.target_delete(actor=Actor.for_admin_site(request), target=target)
            except (ApplicationError, PermissionDenied) as error:
                self.message_user(
                    request, getattr(error, "message", None) or str(error), messages.ERROR
                )
                return self.response_post_save_change(request, target)
            self.message_user(request, f"Deleted target {target.name}.", messages.SUCCESS)
            return self.response_delete(request, target.name, object_id)
        return super().delete_view(request, object_id, extra_context)

    @admin.action(description="Delete the selected targets (refused while endpoints use them)")
    def delete_targets(self, request, queryset):
        actor = Actor.for_admin_site(request)
        run_admin_action(
            self, request, queryset, "Deleted",
            lambda target: services.target_delete(actor=actor, target=target),
        )  # fmt: skip


@admin.register(Endpoint)
class EndpointAdmin(ReadOnlyAdmin):
    list_display = ["name", "team", "target", "status", "generation", "url", "last_reconciled_at"]
    list_filter = ["status", "team", "target"]
    search_fields = ["name"]
    exclude = ["gateway_token"]
    actions = ["stop", "rollback", "rotate_gateway_token"]

    @admin.action(description="Stop the selected endpoints")
    def stop(self, request, queryset):
        actor = Actor.for_admin_site(request)
        run_admin_action(
            self, request, queryset, "Stopped",
            lambda endpoint: services.endpoint_stop(
                actor=actor, endpoint=endpoint, note="Stopped from the admin site."
            ),
        )  # fmt: skip

    @admin.action(description="Roll back the selected endpoints to their last live release")
    def rollback(self, request, queryset):
        actor = Actor.for_admin_site(request)
        run_admin_action(
            self, request, queryset, "Rolled back",
            lambda endpoint: services.endpoint_rollback(
                actor=actor, endpoint=endpoint, note="Rolled back from the admin site."
            ),
        )  # fmt: skip

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
    actions = ["rollback_to"]

    @admin.action(description="Roll each endpoint back to the selected release")
    def rollback_to(self, request, queryset):
        actor = Actor.for_admin_site(request)
        per_endpoint = {}
        for release in queryset.select_related("endpoint"):
            per_endpoint.setdefault(release.endpoint_id, []).append(release)
        if any(len(releases) > 1 for releases in per_endpoint.values()):
            self.message_user(
                request, "Select one release per endpoint to roll back to.", messages.ERROR
            )
            return
        run_admin_action(
            self, request, queryset.select_related("endpoint"), "Rolled back to",
            lambda release: services.endpoint_rollback(
                actor=actor, endpoint=release.endpoint, release_number=release.number,
                note=f"Rolled back to release {release.number} from the admin site.",
            ),
        )  # fmt: skip


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
