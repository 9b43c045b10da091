"""Admin building blocks shared by the apps: rows written by services are inspected, never
edited, and admin actions call the same services (with their audit) as the pages."""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404

from common.errors import ApplicationError


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows change only through services (one transaction, one audit event each)."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def run_admin_action(model_admin, request, queryset, verb: str, call) -> None:
    """Call `call(item)` for each selected row; report how many were done and why any was
    refused (a service's ApplicationError, a role check) instead of failing the whole action."""
    done, refused = 0, []
    for item in queryset:
        try:
            call(item)
            done += 1
        except (ApplicationError, PermissionDenied, Http404) as error:
            refused.append(f"{item}: {getattr(error, 'message', None) or error or 'not allowed'}")
    if done:
        model_admin.message_user(request, f"{verb} {done} item(s).", messages.SUCCESS)
    for line in refused[:20]:
        model_admin.message_user(request, line, messages.ERROR)
