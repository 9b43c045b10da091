"""Monitoring API: metric series, drift, the prediction log ingest, feedback, shadow comparison,
rollback policies and experiments."""

import hmac

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.exceptions import NotFound
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from accounts.actor import Actor
from common.api import Pagination
from common.errors import ApplicationError
from common.schema import PAGE_PARAMETERS, paginated
from deployments.models import Endpoint
from monitoring import experiments, feedback, guardrails, selectors, services
from monitoring.api import serializers as api
from monitoring.models import RollbackPolicy


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
    responses=api.MetricSeriesSerializer,
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


@extend_schema(responses=api.DriftSummarySerializer)
@api_view(["GET"])
def endpoint_drift(request, name: str):
    """The latest drift report of every version of an endpoint, per feature."""
    actor = Actor.from_request(request)
    endpoint = selectors.endpoint_for_actor(actor=actor, name=name)
    return Response(selectors.drift_summary(endpoint=endpoint))


# --- prediction log, feedback, shadow comparison ------------------------------------------------


@extend_schema(
    request=api.PredictionBatchSerializer,
    responses=api.PredictionBatchResultSerializer,
)
@api_view(["POST"])
@authentication_classes([])
@permission_classes([AllowAny])
def prediction_ingest(request, name: str):
    """A gateway's batch of prediction records `{records: [...]}`, authenticated with the
    endpoint's own gateway token (not a user token). Answers how many were stored and the
    share of requests whose inputs the gateway should log."""
    endpoint = Endpoint.objects.filter(name=name).first()
    supplied = request.headers.get("Authorization", "").encode()
    expected = f"Bearer {endpoint.gateway_token}".encode() if endpoint is not None else b"-"
    # Unknown endpoint and wrong token answer the same, so the name cannot be probed.
    if endpoint is None or not hmac.compare_digest(supplied, expected):
        return Response(
            {"error": "The endpoint's gateway token is required.", "detail": {}}, status=401
        )
    data = request.data
    if not isinstance(data, dict):
        raise ApplicationError("Send {records: [...]}.", {"records": "required"})
    return Response(
        services.prediction_records_ingest(endpoint=endpoint, records=data.get("records"))
    )


@extend_schema(methods=["GET"], responses=api.FeedbackSummarySerializer)
@extend_schema(
    methods=["POST"],
    request=api.FeedbackItemSerializer(many=True),
    responses=api.FeedbackResultSerializer,
)
@api_view(["GET", "POST"])
def endpoint_feedback(request, name: str):
    """POST `[{request_id, label}]` or `[{request_id, value}]` (at most 1 000): stored feedback,
    duplicates and unknown request ids. GET: live accuracy, error and reward per version."""
    actor = Actor.from_request(request)
    endpoint = selectors.endpoint_for_actor(actor=actor, name=name)
    if request.method == "GET":
        return Response({"versions": feedback.feedback_summary(endpoint=endpoint)})
    return Response(services.feedback_record(actor=actor, endpoint=endpoint, items=request.data))


@extend_schema(responses=api.ShadowComparisonSerializer)
@api_view(["GET"])
def endpoint_shadow(request, name: str):
    """Each shadow's agreement with the primary (classifiers) or mean absolute difference
    (regressors) over the last 24 hours, with its hourly trend."""
    actor = Actor.from_request(request)
    endpoint = selectors.endpoint_for_actor(actor=actor, name=name)
    return Response({"shadows": feedback.shadow_comparison(endpoint=endpoint)})


@extend_schema(request=api.PredictionLogSerializer, responses=api.PredictionLogSerializer)
@api_view(["GET", "PUT"])
def endpoint_prediction_log(request, name: str):
    """GET/PUT `{input_sample_percent}`: the share of requests logged with their inputs."""
    actor = Actor.from_request(request)
    endpoint = selectors.endpoint_for_actor(actor=actor, name=name)
    if request.method == "PUT":
        data = request.data if isinstance(request.data, dict) else {}
        services.prediction_log_configure(
            actor=actor,
            endpoint=endpoint,
            input_sample_percent=data.get("input_sample_percent"),
        )
    return Response({"input_sample_percent": feedback.input_sample_percent(endpoint)})


# --- rollback policy --------------------------------------------------------------------------


def policy_document(policy) -> dict:
    """The JSON form of a rollback policy."""
    return {
        "criteria": policy.criteria,
        "failure_limit": policy.failure_limit,
        "on_inconclusive": policy.on_inconclusive,
        "scope": policy.scope,
        "dry_run": policy.dry_run,
        "is_enabled": policy.is_enabled,
        "consecutive_failures": policy.consecutive_failures,
        "last_evaluated_at": policy.last_evaluated_at,
    }


def evaluation_document(evaluation) -> dict:
    """The JSON form of one policy evaluation."""
    return {
        "id": evaluation.pk,
        "created_at": evaluation.created_at,
        "release": evaluation.release_number,
        "version": evaluation.version.reference if evaluation.version else None,
        "outcome": evaluation.outcome,
        "action": evaluation.action,
        "message": evaluation.message,
        "results": evaluation.results,
        "rollback_release": evaluation.rollback_release_number,
    }


POLICY_FIELDS = {"criteria", "failure_limit", "on_inconclusive", "scope", "dry_run", "is_enabled"}


@extend_schema(methods=["GET"], responses=api.RollbackPolicySerializer)
@extend_schema(
    methods=["PUT"],
    request=api.RollbackPolicyInputSerializer,
    responses=api.RollbackPolicySerializer,
)
@extend_schema(methods=["DELETE"], responses={204: None})
@api_view(["GET", "PUT", "DELETE"])
def endpoint_rollback_policy(request, name: str):
    """An endpoint's rollback policy: `{criteria: [{metric, comparator, threshold,
    relative_to_control, window_minutes, minimum_samples}], failure_limit, on_inconclusive
    (pause | rollback | ignore), scope (rollouts | always), dry_run, is_enabled}`."""
    actor = Actor.from_request(request)
    endpoint = selectors.endpoint_for_actor(actor=actor, name=name)
    if request.method == "DELETE":
        services.rollback_policy_delete(actor=actor, endpoint=endpoint)
        return Response(status=204)
    if request.method == "PUT":
        data = request.data
        if not isinstance(data, dict) or set(data) - POLICY_FIELDS:
            raise ApplicationError(
                f"Send an object with {', '.join(sorted(POLICY_FIELDS))}.", {"policy": "object"}
            )
        policy = services.rollback_policy_set(actor=actor, endpoint=endpoint, **data)
        return Response(policy_document(policy))
    policy = RollbackPolicy.objects.filter(endpoint=endpoint).first()
    if policy is None:
        raise NotFound("This endpoint has no rollback policy.")
    return Response(policy_document(policy))


@extend_schema(responses=api.PolicyEvaluationListSerializer)
@api_view(["GET"])
def endpoint_policy_evaluations(request, name: str):
    """The latest 50 evaluations of the endpoint's rollback policy, newest first."""
    actor = Actor.from_request(request)
    endpoint = selectors.endpoint_for_actor(actor=actor, name=name)
    evaluations = guardrails.policy_evaluations(endpoint=endpoint)
    return Response({"evaluations": [evaluation_document(e) for e in evaluations]})


# --- experiments ------------------------------------------------------------------------------

EXPERIMENT_FIELDS = {
    "endpoint", "name", "description", "control", "treatment", "treatment_percent", "sticky",
    "metric", "guardrails", "alpha", "power", "minimum_effect", "planning_variance",
    "auto_promote", "auto_stop_loser",
}  # fmt: skip


def experiment_document(experiment) -> dict:
    """The JSON form of an experiment, with its per-arm results and verdict."""
    result = experiment.result or {}
    return {
        "id": experiment.pk,
        "name": experiment.name,
        "description": experiment.description,
        "endpoint": experiment.endpoint.name,
        "control": experiment.control.reference,
        "treatment": experiment.treatment.reference,
        "treatment_percent": experiment.treatment_percent,
        "sticky": experiment.sticky,
        "metric": experiment.metric,
        "guardrails": experiment.guardrails,
        "alpha": experiment.alpha,
        "power": experiment.power,
        "minimum_effect": experiment.minimum_effect,
        "planned_sample_size": experiment.planned_sample_size,
        "progress": experiments.experiment_progress(experiment),
        "auto_promote": experiment.auto_promote,
        "auto_stop_loser": experiment.auto_stop_loser,
        "status": experiment.status,
        "verdict": experiment.verdict,
        "verdict_text": experiments.verdict_sentence(experiment),
        "arms": {"control": result.get("control"), "treatment": result.get("treatment")},
        "difference": result.get("difference"),
        "confidence_interval": [experiment.lower, experiment.upper],
        "p_value": result.get("p_value"),
        "guardrail_status": result.get("guardrails", []),
        "started_at": experiment.started_at,
        "ended_at": experiment.ended_at,
        "ended_reason": experiment.ended_reason,
        "last_evaluated_at": experiment.last_evaluated_at,
    }


@extend_schema(
    methods=["GET"],
    operation_id="v1_experiments_list",
    parameters=PAGE_PARAMETERS,
    responses=paginated(api.ExperimentSerializer),
)
@extend_schema(
    methods=["POST"],
    operation_id="v1_experiments_create",
    request=api.ExperimentInputSerializer,
    responses={201: api.ExperimentSerializer},
)
@api_view(["GET", "POST"])
def experiment_list(request):
    """Experiments of the caller's teams; POST creates a draft `{endpoint, name, control,
    treatment, metric, minimum_effect, ...}` with its planned sample size."""
    actor = Actor.from_request(request)
    if request.method == "GET":
        paginator = Pagination()
        page = paginator.paginate_queryset(
            experiments.experiment_list_for_actor(actor=actor), request
        )
        return paginator.get_paginated_response([experiment_document(e) for e in page])
    data = request.data
    if not isinstance(data, dict) or set(data) - EXPERIMENT_FIELDS:
        raise ApplicationError(
            f"Send an object with {', '.join(sorted(EXPERIMENT_FIELDS))}.", {"experiment": "object"}
        )
    fields = dict(data)
    endpoint_name = fields.pop("endpoint", None)
    if not isinstance(endpoint_name, str):
        raise ApplicationError("endpoint (its name) is required.", {"endpoint": "required"})
    endpoint = selectors.endpoint_for_actor(actor=actor, name=endpoint_name)
    for required in ("name", "control", "treatment", "metric", "minimum_effect"):
        if required not in fields:
            raise ApplicationError(f"{required} is required.", {required: "required"})
    experiment = services.experiment_create(actor=actor, endpoint=endpoint, **fields)
    return Response(experiment_document(experiment), status=201)


@extend_schema(operation_id="v1_experiments_retrieve", responses=api.ExperimentSerializer)
@api_view(["GET"])
def experiment_detail(request, pk: int):
    """One experiment: per-arm results, the always-valid interval on the difference, verdict."""
    actor = Actor.from_request(request)
    return Response(experiment_document(experiments.experiment_for_actor(actor=actor, pk=pk)))


@extend_schema(request=None, responses=api.ExperimentSerializer)
@api_view(["POST"])
def experiment_action(request, pk: int, action: str):
    """Start a draft (splits the endpoint's traffic) or stop a running experiment."""
    actor = Actor.from_request(request)
    experiment = experiments.experiment_for_actor(actor=actor, pk=pk)
    if action == "start":
        experiment = services.experiment_start(actor=actor, experiment=experiment)
    else:
        experiment = services.experiment_stop(actor=actor, experiment=experiment)
    return Response(experiment_document(experiment))
