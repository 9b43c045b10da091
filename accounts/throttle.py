"""Sign-in throttling: django-axes counts failures per client address and locks it out.

The address is `accounts.actor.client_ip` (X-Forwarded-For only for TRUSTED_PROXY_COUNT hops),
for axes and for every DRF throttle built on `ClientAddressThrottle`. Each failure up to the
lockout is also an audit row; tries during the lockout are not (they could fill the table).
"""

import logging

from axes.handlers.database import AxesDatabaseHandler
from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_failure_limit
from django.conf import settings
from django.contrib.auth.signals import user_login_failed
from django.http import JsonResponse
from django.shortcuts import render
from rest_framework import exceptions
from rest_framework.throttling import AnonRateThrottle

from accounts.actor import client_ip

logger = logging.getLogger(__name__)


def lockout_message() -> str:
    """What a locked-out client is told."""
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    return (
        f"Too many failed sign-ins from your address. Try again in {minutes} minutes "
        "or ask an administrator to unlock it (manage.py axes_reset_ip ADDRESS)."
    )


class AuditedAxesHandler(AxesDatabaseHandler):
    """axes' database handler that also writes each counted failure to the audit log."""

    def user_login_failed(self, sender, credentials: dict, request=None, **kwargs):
        super().user_login_failed(sender, credentials, request, **kwargs)
        failures = getattr(request, "axes_failures_since_start", None)
        limit = get_failure_limit(request, credentials) if request is not None else 0
        # Tries during a lockout keep it going (axes resets the cool-off) but are not audited
        # one by one: the row that says "locked out" is enough, and the table stays bounded.
        if failures is None or failures > limit:
            return
        from accounts import services

        services.sign_in_failure_record(
            username=str((credentials or {}).get("username") or "")[:150],
            ip=client_ip(request),
            path=request.path[:200],
            locked_out=failures == limit,
        )


def lockout_response(request, original_response=None, credentials=None):
    """A locked-out sign-in: the login page with the reason (or JSON for the API), 429."""
    message = lockout_message()
    if request.path.startswith("/api/"):
        return JsonResponse({"error": message, "detail": {}}, status=429)
    from accounts.views import login_context

    context = {**login_context(), "locked_out_message": message, "next": ""}
    return render(request, "accounts/login.html", context, status=429)


def token_failure_record(request, *, prefix: str) -> None:
    """Count a wrong API token like a wrong password (same address, same lockout)."""
    django_request = getattr(request, "_request", request)
    user_login_failed.send(
        sender=__name__, credentials={"username": f"token {prefix}"}, request=django_request
    )


def refuse_if_locked_out(request) -> None:
    """Refuse API token authentication from an address that is locked out."""
    django_request = getattr(request, "_request", request)
    if settings.AXES_ENABLED and AxesProxyHandler.is_locked(django_request):
        raise exceptions.Throttled(detail=lockout_message())


class ClientAddressThrottle(AnonRateThrottle):
    """An anonymous-rate throttle keyed on the trusted client address, never on a header
    the client sets itself (DRF's own `get_ident` takes X-Forwarded-For as given)."""

    def get_ident(self, request):
        return client_ip(request) or "unknown"
