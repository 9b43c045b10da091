"""Monitoring pages: the home dashboard, endpoint metrics and drift, alerts, /metrics."""

import hmac

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from accounts.actor import Actor
from accounts.models import Role
from accounts.permissions import require_role
from common.errors import ApplicationError
from common.htmx import render_page_or_partial
from common.pagination import paginate
from deployments.selectors import endpoint_list_for_actor
from monitoring import charts, experiments, feedback, guardrails, metrics, selectors, services
from monitoring.forms import AlertRuleForm, ExperimentForm, RollbackPolicyForm
from monitoring.models import RollbackPolicy
from registry.selectors import version_list_ready_for_actor


@login_required
def home(request):
    """The dashboard: a health card per endpoint, recent models, and first steps when empty."""
    actor = Actor.from_request(request)
    return render(request, "home.html", selectors.dashboard_for_actor(actor=actor))


@login_required
def experiment_list(request):
    """A/B experiments of the user's teams, newest first, with status, verdict and progress."""
    actor = Actor.from_request(request)
    page = paginate(request, experiments.experiment_list_for_actor(actor=actor), per_page=50)
    for experiment in page:
        experiment.progress = experiments.experiment_progress(experiment)
    context = {"page": page, "can_create": _can_create_experiments(actor)}
    return render(request, "monitoring/experiment_list.html", context)


def _can_create_experiments(actor: Actor) -> bool:
    return any(actor.has_role(team_id, Role.DEPLOYER) for team_id in actor.team_ids)


def _experiment_endpoints(actor: Actor) -> list:
    """Endpoints where the actor may create experiments (deployer or higher)."""
    team_ids = [team_id for team_id in actor.team_ids if actor.has_role(team_id, Role.DEPLOYER)]
    return list(endpoint_list_for_actor(actor=actor).filter(team_id__in=team_ids).order_by("name"))


def _experiment_initial(endpoints: list, name: str) -> dict:
    """Start from the endpoint's split: control = its primary, treatment = its candidate."""
    endpoint = next((endpoint for endpoint in endpoints if endpoint.name == name), None)
    if endpoint is None:
        return {}
    variants = endpoint.desired_release.variants if endpoint.desired_release else []
    by_role = {variant["role"]: variant["version"] for variant in variants}
    return {
        "endpoint": endpoint.name,
        "control": by_role.get("primary", ""),
        "treatment": by_role.get("candidate", ""),
    }


@login_required
def experiment_create(request):
    """The form for a new draft experiment (deployers); `experiment_create` plans its size."""
    actor = Actor.from_request(request)
    if not _can_create_experiments(actor):
        raise PermissionDenied("Creating experiments needs the deployer role or higher.")
    endpoints = _experiment_endpoints(actor)
    versions = [v.reference for v in version_list_ready_for_actor(actor=actor)[:200]]
    names = [endpoint.name for endpoint in endpoints]
    if request.method != "POST":
        initial = _experiment_initial(endpoints, request.GET.get("endpoint", ""))
        form = ExperimentForm(endpoints=names, versions=versions, initial=initial)
        return render(request, "monitoring/experiment_create.html", {"form": form})
    endpoint = None
    if request.POST.get("endpoint"):
        # Another team's endpoint is a 404, a lower role a 403, before judging the input.
        endpoint = selectors.endpoint_for_actor(actor=actor, name=request.POST["endpoint"])
        require_role(actor, endpoint.team_id, Role.DEPLOYER)
    form = ExperimentForm(request.POST, endpoints=names, versions=versions)
    if form.is_valid():
        try:
            experiment = services.experiment_create(
                actor=actor, endpoint=endpoint, **form.service_arguments()
            )
        except ApplicationError as error:
            form.add_service_error(error)
        else:
            messages.success(
                request,
                f"Experiment {experiment.name} created as a draft; it plans for "
                f"{experiment.planned_sample_size} outcomes per arm. Start it to split traffic.",
            )
            return redirect("experiment-detail", pk=experiment.pk)
    return render(request, "monitoring/experiment_create.html", {"form": form})


@login_required
def experiment_detail(request, pk: int):
    """One experiment: cumulative metric per arm with bands, sample-size progress, the verdict
    in words with its numbers, and guardrail status."""
    actor = Actor.from_request(request)
    experiment = experiments.experiment_for_actor(actor=actor, pk=pk)
    snapshots = [
        {
            "at": snapshot.created_at.isoformat(),
            "control": {
                "count": snapshot.control_count,
                "mean": snapshot.control_mean,
                "variance": snapshot.control_variance,
            },
            "treatment": {
                "count": snapshot.treatment_count,
                "mean": snapshot.treatment_mean,
                "variance": snapshot.treatment_variance,
            },
            "lower": snapshot.lower,
            "upper": snapshot.upper,
        }
        for snapshot in experiment.snapshots.order_by("created_at", "id")[:2000]
    ]
    label = experiment.get_metric_display()
    context = {
        "experiment": experiment,
        "figure": charts.experiment_figure(snapshots, label),
        "difference_figure": charts.experiment_difference_figure(snapshots, label),
        "verdict": experiments.verdict_sentence(experiment),
        "progress": experiments.experiment_progress(experiment),
        "guardrails": (experiment.result or {}).get("guardrails", []),
        "can_edit": actor.has_role(experiment.endpoint.team_id, Role.DEPLOYER),
    }
    return render(request, "monitoring/experiment_detail.html", context)


@login_required
@require_POST
def experiment_action(request, pk: int, action: str):
    """Start a draft experiment or stop a running one."""
    actor = Actor.from_request(request)
    experiment = experiments.experiment_for_actor(actor=actor, pk=pk)
    try:
        if action == "start":
            services.experiment_start(actor=actor, experiment=experiment)
            messages.success(request, "Experiment started; the endpoint's traffic is split.")
        else:
            services.experiment_stop(actor=actor, experiment=experiment)
            messages.success(request, "Experiment stopped; the traffic split stays as it is.")
    except ApplicationError as error:
        messages.error(request, error.message)
    return redirect("experiment-detail", pk=experiment.pk)


@login_required
def endpoint_guardrails(request, name: str):
    """An endpoint's rollback policy, its recent evaluations, live accuracy per version from
    feedback, and how its shadows agree with the primary."""
    actor = Actor.from_request(request)
    endpoint = selectors.endpoint_for_actor(actor=actor, name=name)
    return _guardrails_page(request, actor, endpoint)


def _guardrails_page(request, actor: Actor, endpoint, form: RollbackPolicyForm | None = None):
    policy = RollbackPolicy.objects.filter(endpoint=endpoint).first()
    can_edit = actor.has_role(endpoint.team_id, Role.DEPLOYER)
    context = {
        "endpoint": endpoint,
        "policy": policy,
        "evaluations": guardrails.policy_evaluations(endpoint=endpoint),
        "accuracy": feedback.feedback_summary(endpoint=endpoint),
        "shadows": feedback.shadow_comparison(endpoint=endpoint),
        "can_edit": can_edit,
        "policy_form": form or (RollbackPolicyForm(policy=policy) if can_edit else None),
    }
    return render(request, "monitoring/endpoint_guardrails.html", context)


@login_required
@require_POST
def rollback_policy_set(request, name: str):
    """Create or replace the endpoint's rollback policy from the guardrails page (deployers)."""
    actor = Actor.from_request(request)
    endpoint = selectors.endpoint_for_actor(actor=actor, name=name)
    require_role(actor, endpoint.team_id, Role.DEPLOYER)  # 403 before judging the input
    form = RollbackPolicyForm(request.POST)
    if form.is_valid():
        try:
            services.rollback_policy_set(actor=actor, endpoint=endpoint, **form.service_arguments())
        except ApplicationError as error:
            form.add_service_error(error)
        else:
            messages.success(request, "Rollback policy saved; it is evaluated every minute.")
            return redirect("monitoring:endpoint-guardrails", name=endpoint.name)
    return _guardrails_page(request, actor, endpoint, form)


@login_required
def endpoint_monitoring(request, name: str):
    """Live charts of one endpoint and a side-by-side table of its versions; the htmx partial
    (polled while the endpoint serves) carries fresh figure data and the table."""
    actor = Actor.from_request(request)
    endpoint = selectors.endpoint_for_actor(actor=actor, name=name)
    range_name = request.GET.get("range", "")
    if range_name not in selectors.RANGES:
        range_name = selectors.DEFAULT_RANGE
    series = selectors.metric_series(endpoint=endpoint, range_name=range_name)
    figures = [
        {"name": key, "id": f"figure-{key}", "figure": figure}
        for key, figure in charts.monitoring_figures(series).items()
    ]
    context = {
        "endpoint": endpoint,
        "series": series,
        "figures": figures,
        "ranges": list(selectors.RANGES),
        "range": range_name,
        "polling": endpoint.status in selectors.POLLED_STATUSES,
        "poll_seconds": max(1, round(settings.METRICS_SCRAPE_INTERVAL_SECONDS)),
    }
    return render_page_or_partial(
        request,
        "monitoring/endpoint_monitoring.html",
        "monitoring/_endpoint_monitoring.html",
        context,
    )


@login_required
def endpoint_drift(request, name: str):
    """The latest drift report of each serving version, its heatmap and feature overlays."""
    actor = Actor.from_request(request)
    endpoint = selectors.endpoint_for_actor(actor=actor, name=name)
    context = {"endpoint": endpoint, **selectors.drift_page(endpoint=endpoint)}
    return render(request, "monitoring/endpoint_drift.html", context)


@login_required
def endpoint_alerts(request, name: str):
    """An endpoint's alert rules and recent alerts; deployers and admins get the rule form."""
    actor = Actor.from_request(request)
    endpoint = selectors.endpoint_for_actor(actor=actor, name=name)
    context = {
        "endpoint": endpoint,
        "rules": selectors.alert_rules_for_endpoint(endpoint=endpoint),
        "alerts": selectors.alerts_for_endpoint(endpoint=endpoint),
        "can_edit": actor.has_role(endpoint.team_id, Role.DEPLOYER),
        "form": AlertRuleForm(),
    }
    return render(request, "monitoring/endpoint_alerts.html", context)


@login_required
@require_POST
def alert_rule_create(request, name: str):
    """Add a rule from the endpoint's alerts page."""
    actor = Actor.from_request(request)
    endpoint = selectors.endpoint_for_actor(actor=actor, name=name)
    require_role(actor, endpoint.team_id, Role.DEPLOYER)  # 403 before judging the input
    form = AlertRuleForm(request.POST)
    if form.is_valid():
        try:
            services.alert_rule_create(actor=actor, endpoint=endpoint, **form.cleaned_data)
            messages.success(request, f"Rule {form.cleaned_data['name']} added.")
        except ApplicationError as error:
            messages.error(request, error.message)
    else:
        errors = "; ".join(f"{field}: {' '.join(text)}" for field, text in form.errors.items())
        messages.error(request, f"The rule was not added: {errors}")
    return redirect("monitoring:endpoint-alerts", name=endpoint.name)


@login_required
@require_POST
def alert_rule_delete(request, name: str, pk: int):
    """Remove a rule."""
    actor = Actor.from_request(request)
    endpoint = selectors.endpoint_for_actor(actor=actor, name=name)
    rule = get_object_or_404(selectors.alert_rules_for_endpoint(endpoint=endpoint), pk=pk)
    services.alert_rule_delete(actor=actor, rule=rule)
    messages.success(request, f"Rule {rule.name} removed.")
    return redirect("monitoring:endpoint-alerts", name=endpoint.name)


@login_required
@require_POST
def alert_rule_toggle(request, name: str, pk: int):
    """Pause or resume a rule."""
    actor = Actor.from_request(request)
    endpoint = selectors.endpoint_for_actor(actor=actor, name=name)
    rule = get_object_or_404(selectors.alert_rules_for_endpoint(endpoint=endpoint), pk=pk)
    services.alert_rule_set_enabled(actor=actor, rule=rule, enabled=not rule.is_enabled)
    return redirect("monitoring:endpoint-alerts", name=endpoint.name)


@login_required
def alert_list(request):
    """Alerts across the user's teams, open ones first."""
    actor = Actor.from_request(request)
    status = request.GET.get("status", "")
    page = paginate(request, selectors.alerts_for_actor(actor=actor, status=status), per_page=50)
    return render(request, "monitoring/alert_list.html", {"page": page, "status": status})


def _metrics_caller_allowed(request) -> bool:
    token = settings.METRICS_TOKEN
    supplied = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(supplied.encode(), f"Bearer {token}".encode()):
        return True
    user = request.user
    return user.is_authenticated and user.is_active and user.is_staff


@never_cache
def prometheus_metrics(request):
    """The dashboard's own metrics, for Prometheus (bearer METRICS_TOKEN) or staff."""
    if not _metrics_caller_allowed(request):
        status = 403 if request.user.is_authenticated else 401
        response = HttpResponse("A metrics token or a staff session is required.\n", status=status)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        response["Content-Type"] = "text/plain"
        return response
    if request.method not in ("GET", "HEAD"):
        return HttpResponse(status=405, headers={"Allow": "GET, HEAD"})
    return HttpResponse(metrics.render(), content_type=metrics.CONTENT_TYPE)
