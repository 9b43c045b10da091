"""The load-balancer health check, and the API's answer for paths it does not have."""

from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from drf_spectacular.utils import extend_schema
from rest_framework.decorators import api_view
from rest_framework.exceptions import NotFound


@never_cache
@require_GET
def healthz(request):
    """200 when the web process can reach its database; for load balancers, no auth."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:  # any database failure means "not healthy", whatever its type
        return JsonResponse({"status": "unavailable", "database": "unreachable"}, status=503)
    return JsonResponse({"status": "ok"})


@extend_schema(exclude=True)
@api_view(["GET", "POST", "PUT", "PATCH", "DELETE"])
def api_not_found(request, path: str = ""):
    """Any /api/ path that names no operation: the API's JSON error body (after the usual
    authentication, so anonymous callers get 401 as everywhere else), never an HTML page."""
    raise NotFound("No such API path.")
