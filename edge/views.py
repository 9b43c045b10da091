"""Fleet pages: edge fleets with their devices, enrollment codes and staged rollouts."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from accounts.actor import Actor
from accounts.models import Role
from common.errors import ApplicationError
from common.htmx import render_page_or_partial
from edge import selectors as edge_selectors
from edge.forms import EnrollmentCodeForm, RolloutForm, form_error
from edge.services import (
    device_revoke,
    edge_rollout_cancel,
    edge_rollout_create,
    edge_rollout_retry,
    enrollment_code_create,
    fleet_endpoint,
)


@login_required
def fleet_list(request):
    """Edge fleets (edge targets) of the user's teams, with device counts."""
    actor = Actor.from_request(request)
    fleets = edge_selectors.fleet_list_for_actor(actor=actor)
    return render(request, "edge/fleet_list.html", {"fleets": fleets})


def _fleet_context(request, target, **extra) -> dict:
    rollouts = [
        {"rollout": rollout, "waves": edge_selectors.rollout_waves(rollout)}
        for rollout in edge_selectors.rollout_list_for_fleet(target=target)[:20]
    ]
    devices = [
        {"device": device, "online": edge_selectors.device_is_online(device)}
        for device in edge_selectors.device_list_for_fleet(target=target)[:500]
    ]
    actor = Actor.from_request(request)
    return {
        "fleet": target,
        "fleet_endpoint": fleet_endpoint(target),
        # What the agent's --server takes: this dashboard as the browser reached it.
        "server_url": request.build_absolute_uri("/").rstrip("/"),
        "devices": devices,
        "rollouts": rollouts,
        "polling": any(edge_selectors.rollout_is_in_flight(row["rollout"]) for row in rollouts),
        "can_deploy": actor.has_role(target.team_id, Role.DEPLOYER),
        "code_form": EnrollmentCodeForm(),
        "rollout_form": RolloutForm(),
        **extra,
    }


@login_required
def fleet_detail(request, name: str):
    """One fleet: devices and rollouts; htmx polls the rollouts while one is in flight."""
    target = edge_selectors.fleet_get_for_actor(actor=Actor.from_request(request), name=name)
    return render_page_or_partial(
        request,
        "edge/fleet_detail.html",
        "edge/_fleet_rollouts.html",
        _fleet_context(request, target),
    )


@login_required
@require_POST
def fleet_enrollment_code(request, name: str):
    """Make a one-time enrollment code and show it once, on this response only."""
    actor = Actor.from_request(request)
    target = edge_selectors.fleet_get_for_actor(actor=actor, name=name)
    form = EnrollmentCodeForm(request.POST)
    try:
        if not form.is_valid():
            raise form_error(form)
        _code, plain = enrollment_code_create(actor=actor, target=target, **form.cleaned_data)
    except ApplicationError as error:
        messages.error(request, error.message)
        return redirect("edge:fleet-detail", target.name)
    context = _fleet_context(request, target, new_code=plain)
    return render(request, "edge/fleet_detail.html", context)


@login_required
@require_POST
def fleet_rollout_create(request, name: str):
    """Start a staged rollout on this fleet."""
    actor = Actor.from_request(request)
    target = edge_selectors.fleet_get_for_actor(actor=actor, name=name)
    form = RolloutForm(request.POST)
    try:
        if not form.is_valid():
            raise form_error(form)
        rollout = edge_rollout_create(actor=actor, target=target, **form.options())
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"Rollout {rollout.pk} to {rollout.to_version} started.")
    return redirect("edge:fleet-detail", target.name)


@login_required
@require_POST
def fleet_rollout_action(request, name: str, rollout_id: int, action: str):
    """Cancel or retry a rollout (both idempotent)."""
    actor = Actor.from_request(request)
    target = edge_selectors.fleet_get_for_actor(actor=actor, name=name)
    rollout = get_object_or_404(edge_selectors.rollout_list_for_fleet(target=target), pk=rollout_id)
    call = {"cancel": edge_rollout_cancel, "retry": edge_rollout_retry}.get(action)
    if call is None:
        raise Http404("No such action.")
    try:
        result = call(actor=actor, rollout=rollout)
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"Rollout {result.pk} is {result.status}.")
    return redirect("edge:fleet-detail", target.name)


@login_required
@require_POST
def fleet_device_revoke(request, name: str, device: str):
    """Revoke a device's token."""
    actor = Actor.from_request(request)
    target = edge_selectors.fleet_get_for_actor(actor=actor, name=name)
    row = get_object_or_404(edge_selectors.device_list_for_fleet(target=target), name=device)
    device_revoke(actor=actor, device=row)
    messages.success(request, f"Device {row.name} revoked.")
    return redirect("edge:fleet-detail", target.name)
