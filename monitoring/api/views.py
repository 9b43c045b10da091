"""Read-only monitoring API: an endpoint's metric series and its latest drift reports."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.decorators import api_view
from rest_framework.response import Response

from accounts.actor import Actor
from monitoring import selectors


@extend_schema(
    parameters=[
        OpenApiParameter(
            "range",
            OpenApiTypes.STR,
            enum=list(selectors.RANGES),
            default=selectors.DEFAULT_RANGE,
            description="How far back; 7d and 30d come from hourly rollups.",
        )
    ],
    responses=OpenApiTypes.OBJECT,
)
@api_view(["GET"])
def endpoint_metrics(request, name: str):
    """Per-version series (requests/s, error rates, latency p50/p95/p99, traffic share) of an
    endpoint, at most 2 000 points per series, with totals over the range."""
    actor = Actor.from_request(request)
    endpoint = selectors.endpoint_for_actor(actor=actor, name=name)
    range_name = request.query_params.get("range")
    selectors.parse_range(range_name)  # 400 with a readable error before any work
    return Response(selectors.metric_series(endpoint=endpoint, range_name=range_name))


@extend_schema(responses=OpenApiTypes.OBJECT)
@api_view(["GET"])
def endpoint_drift(request, name: str):
    """The latest drift report of every version of an endpoint, per feature."""
    actor = Actor.from_request(request)
    endpoint = selectors.endpoint_for_actor(actor=actor, name=name)
    return Response(selectors.drift_summary(endpoint=endpoint))
