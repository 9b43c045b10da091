"""Admin for teams, memberships, tokens (with a revoke action) and the read-only audit log."""

from django.contrib import admin, messages

from accounts.actor import Actor
from accounts.models import ApiToken, AuditEvent, Membership, Team
from accounts.services import token_revoke
from common.admin import ReadOnlyAdmin


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["name", "display_name", "created_at"]
    search_fields = ["name", "display_name"]
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "team", "role", "created_at"]
    list_filter = ["role", "team"]
    search_fields = ["user__username", "team__name"]
    autocomplete_fields = ["user", "team"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "user", "team", "expires_at", "revoked_at", "last_used_at"]
    list_filter = ["team", "revoked_at"]
    search_fields = ["name", "prefix", "user__username"]
    # Tokens are issued with `createtoken` (the plain value must be shown once); the admin
    # only inspects and revokes them.
    readonly_fields = [
        "user",
        "team",
        "name",
        "prefix",
        "digest",
        "expires_at",
        "revoked_at",
        "last_used_at",
        "created_at",
    ]
    exclude = ["updated_at"]
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request, queryset):
        actor = Actor.from_request(request)
        for token in queryset:
            token_revoke(actor=actor, token=token)
        self.message_user(request, f"Revoked {queryset.count()} token(s).", messages.SUCCESS)


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "actor_label", "action", "object_repr", "team", "source_ip"]
    list_filter = ["action", "team"]
    search_fields = ["actor_label", "object_repr", "action"]
    date_hierarchy = "created_at"
