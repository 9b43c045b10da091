"""Deployment pages: endpoints (split, history, one-click rollback, live progress), targets,
builds, and the deploy form the registry's version page links to."""

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from accounts.actor import Actor
from accounts.models import Role, Team
from common.errors import ApplicationError
from common.htmx import render_page_or_partial
from common.pagination import paginate
from deployments import access, hooks, selectors, services
from deployments.forms import (
    DeployForm,
    EndpointCreateForm,
    ForceForm,
    PromoteForm,
    RollbackForm,
    ScaleForm,
    TargetCreateForm,
    TargetEditForm,
    TrafficForm,
)
from deployments.models import BUILD_TERMINAL, EndpointKey


def _form_errors(form) -> str:
    return " ".join(f"{error}" for errors in form.errors.values() for error in errors)


@login_required
def endpoint_list(request):
    """Endpoints of the user's teams: status, what serves, and the split."""
    actor = Actor.from_request(request)
    page = paginate(request, selectors.endpoint_list_for_actor(actor=actor))
    rows = [
        {
            "endpoint": endpoint,
            "serving": selectors.release_traffic(endpoint.live_release),
            "desired": selectors.release_traffic(endpoint.desired_release),
        }
        for endpoint in page.object_list
    ]
    return render(request, "deployments/endpoint_list.html", {"page": page, "rows": rows})


@login_required
def endpoint_create(request):
    """Deploy a version: to a new endpoint, or (links below the form) to an existing one."""
    actor = Actor.from_request(request)
    targets = selectors.target_list_for_actor(actor=actor)
    initial = {
        "version": request.GET.get("version", "")[:200],
        "target": request.GET.get("target", "")[:40] or None,
    }
    form = EndpointCreateForm(request.POST or None, targets=targets, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            endpoint = services.endpoint_create(actor=actor, **form.cleaned_data)
        except ApplicationError as error:
            form.add_error(None, error.message)
        else:
            messages.success(request, f"Endpoint {endpoint.name} created; it is starting.")
            return redirect("deployments:endpoint-detail", endpoint.name)
    endpoints = selectors.endpoint_list_for_actor(actor=actor)
    version = form["version"].value() or ""
    context = {"form": form, "endpoints": endpoints, "version": version}
    return render(request, "deployments/endpoint_create.html", context)


@login_required
def endpoint_detail(request, name: str):
    """One endpoint; htmx polls its progress partial while it is pending or progressing."""
    actor = Actor.from_request(request)
    endpoint = selectors.endpoint_get_for_actor(actor=actor, name=name)
    if request.htmx and endpoint.status not in selectors.POLLING_STATUSES:
        # The change finished: reload the whole page once so the split and history are fresh.
        response = HttpResponse(status=204)
        response["HX-Refresh"] = "true"
        return response
    return render_page_or_partial(
        request,
        "deployments/endpoint_detail.html",
        "deployments/_endpoint_progress.html",
        _detail_context(request, actor, endpoint),
    )


def _detail_context(request, actor: Actor, endpoint, **extra) -> dict:
    release = endpoint.desired_release
    context = {
        "endpoint": endpoint,
        "polling": endpoint.status in selectors.POLLING_STATUSES,
        "traffic": selectors.release_traffic(release),
        "serving": selectors.release_traffic(endpoint.live_release),
        "traffic_form": TrafficForm(variants=release.variants if release else []),
        "deploy_form": DeployForm(),
        "can_force": actor.has_role(endpoint.team_id, Role.DEPLOYER),
        "releases": selectors.release_list_for_endpoint(endpoint=endpoint)[:50],
        "events": selectors.event_tail_for_endpoint(endpoint=endpoint),
        "has_candidate": any(
            v["role"] == "candidate" for v in (release.variants if release else [])
        ),
        "is_stopped": release is not None and release.is_stop,
        **_scale_context(endpoint),
        **extra,
    }
    if not request.htmx:
        context.update(hooks.endpoint_page_context(endpoint=endpoint))
    return context


def _endpoint_action(request, name: str, call, *, refusable: str = "") -> HttpResponse:
    """Run one endpoint service from a POSTed form and go back to the endpoint page.

    When the signature check refuses a `refusable` action (traffic, promote, rollback), the
    page is shown again with the diff beside that form and, for deployers, a force box that
    posts the same fields again."""
    actor = Actor.from_request(request)
    endpoint = selectors.endpoint_get_for_actor(actor=actor, name=name)
    try:
        release = call(actor, endpoint)
    except ApplicationError as error:
        if not (refusable and "signature" in error.extra):
            messages.error(request, error.message)
        else:
            endpoint = selectors.endpoint_get_for_actor(actor=actor, name=name)
            refused = {
                "action": refusable,
                "message": error.message,
                "fields": [
                    (key, value)
                    for key, values in request.POST.lists()
                    if key not in {"csrfmiddlewaretoken", "force"}
                    for value in values
                ],
                "force": ForceForm(auto_id="refused_%s")["force"],
            }
            context = _detail_context(request, actor, endpoint, refused=refused)
            return render(request, "deployments/endpoint_detail.html", context, status=400)
    else:
        if release is not None:
            messages.success(request, f"Release {release.number} written; applying it now.")
    return redirect("deployments:endpoint-detail", endpoint.name)


@login_required
@require_POST
def endpoint_deploy(request, name: str):
    """Deploy a version to this endpoint at a share of traffic."""
    form = DeployForm(request.POST)

    def call(actor, endpoint):
        if not form.is_valid():
            raise ApplicationError(_form_errors(form))
        return services.endpoint_deploy(actor=actor, endpoint=endpoint, **form.cleaned_data)

    return _endpoint_action(request, name, call)


@login_required
@require_POST
def endpoint_traffic(request, name: str):
    """New weights for the current versions."""

    def call(actor, endpoint):
        variants = endpoint.desired_release.variants if endpoint.desired_release else []
        form = TrafficForm(request.POST, variants=variants)
        if not form.is_valid():
            raise ApplicationError(_form_errors(form))
        return services.endpoint_set_traffic(
            actor=actor,
            endpoint=endpoint,
            variants=form.variants_input(),
            force=form.cleaned_data["force"],
        )

    return _endpoint_action(request, name, call, refusable="traffic")


@login_required
@require_POST
def endpoint_promote(request, name: str):
    """The candidate takes 100 %."""
    form = PromoteForm(request.POST)

    def call(actor, endpoint):
        if not form.is_valid():
            raise ApplicationError(_form_errors(form))
        return services.endpoint_promote(
            actor=actor, endpoint=endpoint, force=form.cleaned_data["force"]
        )

    return _endpoint_action(request, name, call, refusable="promote")


@login_required
@require_POST
def endpoint_rollback(request, name: str):
    """Roll back to the release named in the form."""
    form = RollbackForm(request.POST)

    def call(actor, endpoint):
        if not form.is_valid():
            raise ApplicationError(_form_errors(form))
        return services.endpoint_rollback(
            actor=actor,
            endpoint=endpoint,
            release_number=form.cleaned_data["release"],
            force=form.cleaned_data["force"],
        )

    return _endpoint_action(request, name, call, refusable="rollback")


@login_required
@require_POST
def endpoint_stop(request, name: str):
    """Stop serving."""
    return _endpoint_action(
        request,
        name,
        lambda actor, endpoint: services.endpoint_stop(actor=actor, endpoint=endpoint),
    )


def _scale_context(endpoint) -> dict:
    """What the scale partial shows: ready / desired replicas per version, the warm window
    and whether rolling back is a route switch or must start servers."""
    from django.utils import timezone

    replicas = selectors.endpoint_replicas(endpoint=endpoint)
    warm = [row for row in replicas if row["warm_until"] is not None]
    until = warm[0]["warm_until"] if warm else None
    warm_left = int((until - timezone.now()).total_seconds()) if until is not None else 0
    target = services.rollback_default(endpoint)
    running = {row["version"] for row in replicas}
    switch = target is not None and all(v["version"] in running for v in target.variants)
    kind = endpoint.target.kind
    return {
        "scale": {
            "rows": [row for row in replicas if row["warm_until"] is None],
            "scalable": kind in services.SCALABLE_KINDS,
            "autoscaling": kind in services.AUTOSCALING_KINDS,
            "kind": endpoint.target.get_kind_display(),
            "warm": warm,
            "warm_seconds_left": max(0, warm_left),
            "rollback_target": target,
            "rollback_is_switch": switch and warm_left > 0,
        }
    }


@login_required
@require_POST
def endpoint_scale(request, name: str):
    """Scale one version of the current release; scaling down asks to confirm first."""
    actor = Actor.from_request(request)
    endpoint = selectors.endpoint_get_for_actor(actor=actor, name=name)
    form = ScaleForm(request.POST)
    notice = {}
    if not form.is_valid():
        notice["error"] = _form_errors(form)
    else:
        version, replicas = form.cleaned_data["version"], form.cleaned_data["replicas"]
        variants = endpoint.desired_release.variants if endpoint.desired_release else []
        current = next((v for v in variants if v["version"] == version), None)
        from deployments.reconciler import variant_replicas

        before = variant_replicas(current) if current is not None else 0
        if replicas < before and not form.cleaned_data["confirmed"]:
            notice["confirm"] = {"version": version, "before": before, "replicas": replicas}
        else:
            try:
                release = services.endpoint_scale(
                    actor=actor, endpoint=endpoint, version=version, replicas=replicas
                )
            except ApplicationError as error:
                notice["error"] = error.message
            else:
                notice["success"] = f"Release {release.number} written: {version} on {replicas}."
                endpoint.refresh_from_db()
    if not request.htmx and "confirm" not in notice:
        level = messages.error if "error" in notice else messages.success
        level(request, notice.get("error") or notice["success"])
        return redirect("deployments:endpoint-detail", endpoint.name)
    context = {"endpoint": endpoint, "notice": notice, **_scale_context(endpoint)}
    template = "deployments/_endpoint_scale.html" if request.htmx else "deployments/scale.html"
    return render(request, template, context)


@login_required
def target_list(request):
    """Targets of the user's teams, and a form for team admins to add one."""
    actor = Actor.from_request(request)
    admin_teams = Team.objects.filter(
        pk__in=[team_id for team_id in actor.team_ids if actor.has_role(team_id, Role.ADMIN)]
    )
    form = TargetCreateForm(request.POST or None, teams=admin_teams)
    if request.method == "POST" and form.is_valid():
        try:
            target = services.target_create(actor=actor, **form.cleaned_data)
        except ApplicationError as error:
            form.add_error(None, error.message)
        else:
            messages.success(request, f"Target {target.name} added.")
            return redirect("deployments:target-list")
    page = paginate(request, selectors.target_list_for_actor(actor=actor))
    context = {
        "page": page,
        "form": form if admin_teams.exists() else None,
        "admin_team_ids": {team.pk for team in admin_teams},
    }
    return render(request, "deployments/target_list.html", context)


@login_required
def target_edit(request, name: str):
    """Change a target's environment, settings or description (team admins)."""
    actor = Actor.from_request(request)
    target = selectors.target_get_for_actor(actor=actor, name=name)
    if not actor.has_role(target.team_id, Role.ADMIN):
        raise PermissionDenied("Only the team's admins change its targets.")
    initial = {
        "environment": target.environment,
        "config": json.dumps(target.config, indent=2) if target.config else "",
        "description": target.description,
    }
    form = TargetEditForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            services.target_update(actor=actor, target=target, **form.cleaned_data)
        except ApplicationError as error:
            form.add_error(None, error.message)
        else:
            messages.success(request, f"Target {target.name} saved.")
            return redirect("deployments:target-list")
    endpoints = list(target.endpoints.values_list("name", flat=True)[:50])
    context = {"target": target, "form": form, "endpoints": endpoints}
    return render(request, "deployments/target_edit.html", context)


@login_required
@require_POST
def target_delete(request, name: str):
    """Delete a target no endpoint uses (team admins); says why when it is refused."""
    actor = Actor.from_request(request)
    target = selectors.target_get_for_actor(actor=actor, name=name)
    try:
        services.target_delete(actor=actor, target=target)
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"Target {name} deleted.")
    return redirect("deployments:target-list")


@login_required
def build_detail(request, build_id: int):
    """One image build: progress bar and log, polled by htmx while it runs."""
    actor = Actor.from_request(request)
    build = selectors.build_get_for_actor(actor=actor, build_id=build_id)
    context = {"build": build, "polling": build.status not in BUILD_TERMINAL}
    return render_page_or_partial(
        request, "deployments/build_detail.html", "deployments/_build_progress.html", context
    )


@login_required
@require_POST
def endpoint_key_create(request, name: str):
    """Make an inference key and show it once."""
    actor = Actor.from_request(request)
    endpoint = selectors.endpoint_get_for_actor(actor=actor, name=name)
    try:
        _, plain = access.endpoint_key_create(
            actor=actor, endpoint=endpoint, name=request.POST.get("name", "")
        )
    except ApplicationError as error:
        messages.error(request, error.message)
        return redirect("deployments:endpoint-detail", endpoint.name)
    response = render(
        request, "deployments/endpoint_key_created.html", {"endpoint": endpoint, "key": plain}
    )
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def endpoint_key_revoke(request, name: str, key_id: int):
    """Revoke one inference key."""
    actor = Actor.from_request(request)
    endpoint = selectors.endpoint_get_for_actor(actor=actor, name=name)
    key = get_object_or_404(EndpointKey, pk=key_id, endpoint=endpoint)
    access.endpoint_key_revoke(actor=actor, endpoint=endpoint, key=key)
    messages.success(request, f"Key mdi_{key.prefix} revoked.")
    return redirect("deployments:endpoint-detail", endpoint.name)


@login_required
@require_POST
def endpoint_require_key(request, name: str):
    """Switch the key requirement on or off."""
    actor = Actor.from_request(request)
    endpoint = selectors.endpoint_get_for_actor(actor=actor, name=name)
    require = request.POST.get("require_key") == "true"
    try:
        access.endpoint_require_key_set(actor=actor, endpoint=endpoint, require_key=require)
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        state = "now needs a key" if require else "no longer needs a key"
        messages.success(request, f"{endpoint.name} {state}.")
    return redirect("deployments:endpoint-detail", endpoint.name)
