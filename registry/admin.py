"""Admin for the registry: read-only views with filters; changes go through the services."""

from django.contrib import admin

from accounts.actor import Actor
from common.admin import ReadOnlyAdmin, run_admin_action
from registry import services
from registry.models import (
    Alias,
    AliasEvent,
    Artifact,
    BatchJob,
    ModelVersion,
    Optimization,
    RegisteredModel,
)


class VersionInline(admin.TabularInline):
    model = ModelVersion
    fields = ["number", "status", "approval", "created_at"]
    readonly_fields = fields
    extra = 0
    show_change_link = True
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(RegisteredModel)
class RegisteredModelAdmin(ReadOnlyAdmin):
    list_display = ["name", "team", "last_version_number", "archived_at", "updated_at"]
    list_filter = ["team", ("archived_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "description"]
    inlines = [VersionInline]
    actions = ["archive"]

    @admin.action(description="Archive selected models")
    def archive(self, request, queryset):
        actor = Actor.for_admin_site(request)
        run_admin_action(
            self,
            request,
            queryset,
            "Archived",
            lambda model: services.model_archive(actor=actor, model=model),
        )


class ArtifactInline(admin.TabularInline):
    model = Artifact
    fields = ["kind", "original_name", "size", "sha256", "storage_key"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "status", "approval", "created_by", "created_at"]
    list_filter = ["status", "approval", "model__team"]
    search_fields = ["model__name"]
    list_select_related = ["model", "created_by"]
    inlines = [ArtifactInline]
    actions = ["approve", "reject", "archive"]

    def _decide(self, request, queryset, decision: str, verb: str):
        actor = Actor.for_admin_site(request)
        run_admin_action(
            self,
            request,
            queryset.select_related("model"),
            verb,
            lambda version: services.version_approve(
                actor=actor, version=version, decision=decision, comment="From the admin site."
            ),
        )

    @admin.action(description="Approve selected versions")
    def approve(self, request, queryset):
        self._decide(request, queryset, "approved", "Approved")

    @admin.action(description="Reject selected versions")
    def reject(self, request, queryset):
        self._decide(request, queryset, "rejected", "Rejected")

    @admin.action(description="Archive selected versions")
    def archive(self, request, queryset):
        actor = Actor.for_admin_site(request)
        run_admin_action(
            self,
            request,
            queryset.select_related("model"),
            "Archived",
            lambda version: services.version_archive(actor=actor, version=version),
        )


@admin.register(Alias)
class AliasAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "version", "is_protected", "updated_at"]
    list_filter = ["is_protected", "model__team"]
    search_fields = ["model__name", "name"]


@admin.register(AliasEvent)
class AliasEventAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "model",
        "alias_name",
        "from_version",
        "to_version",
        "actor_label",
        "reason",
    ]
    list_filter = ["model__team"]
    search_fields = ["model__name", "alias_name", "actor_label"]


@admin.register(BatchJob)
class BatchJobAdmin(ReadOnlyAdmin):
    list_display = [
        "pk",
        "version",
        "status",
        "rows_done",
        "rows_total",
        "rows_failed",
        "created_at",
    ]
    list_filter = ["status", "version__model__team"]
    search_fields = ["version__model__name", "input_name"]
    exclude = ["input_key", "result_key"]


@admin.register(Optimization)
class OptimizationAdmin(ReadOnlyAdmin):
    list_display = ["pk", "source", "method", "status", "result", "created_at"]
    list_filter = ["status", "method"]
    search_fields = ["source__model__name"]
