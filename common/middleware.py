"""Response headers that Django does not set on its own, and JSON 404s under /api/."""

from django.conf import settings
from django.http import JsonResponse


class ContentSecurityPolicyMiddleware:
    """Adds a Content-Security-Policy header to every response that lacks one."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.policy = settings.CONTENT_SECURITY_POLICY

    def __call__(self, request):
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", self.policy)
        return response


class ApiNotFoundMiddleware:
    """A path under /api/ that names no operation answers the API's JSON error body, not
    Django's HTML 404 page (API clients, and the schema, expect `{error, detail}`)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if (
            response.status_code == 404
            and request.path.startswith("/api/")
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            return JsonResponse({"error": "No such API path.", "detail": {}}, status=404)
        return response
