"""Counts and times every request the dashboard answers, for its own /metrics."""

from time import perf_counter

from monitoring.metrics import KNOWN_METHODS, WEB_REQUEST_DURATION, WEB_REQUESTS


class RequestMetricsMiddleware:
    """Labels by view name (bounded), never by raw path (unbounded)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = perf_counter()
        response = self.get_response(request)
        method = request.method if request.method in KNOWN_METHODS else "OTHER"
        match = getattr(request, "resolver_match", None)
        view = match.view_name if match is not None else "unmatched"
        WEB_REQUESTS.labels(method=method, view=view, status=str(response.status_code)).inc()
        WEB_REQUEST_DURATION.labels(method=method).observe(perf_counter() - started)
        return response
