"""Webhook pages: the list with its form, one webhook with its deliveries, and its actions."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from accounts.actor import Actor
from accounts.models import Role
from accounts.selectors import team_list_for_actor
from common.errors import ApplicationError
from events import selectors, services
from events.forms import WebhookForm


def _webhook_teams(actor: Actor):
    return team_list_for_actor(actor=actor).filter(
        pk__in=[team_id for team_id in actor.team_ids if actor.has_role(team_id, Role.DEPLOYER)]
    )


@login_required
def webhook_list(request):
    """Webhooks of the user's teams; deployers and admins get the form to add one."""
    actor = Actor.from_request(request)
    teams = _webhook_teams(actor)
    context = {
        "webhooks": selectors.webhooks_for_actor(actor=actor),
        "form": WebhookForm(teams=teams) if teams.exists() else None,
    }
    return render(request, "events/webhook_list.html", context)


@login_required
@require_POST
def webhook_create(request):
    """Add a webhook to one of the user's teams."""
    actor = Actor.from_request(request)
    if not _webhook_teams(actor).exists():
        raise PermissionDenied("Adding webhooks needs the deployer role or higher.")
    form = WebhookForm(request.POST, teams=team_list_for_actor(actor=actor))
    if not form.is_valid():
        errors = "; ".join(f"{field}: {' '.join(text)}" for field, text in form.errors.items())
        messages.error(request, f"The webhook was not added: {errors}")
        return redirect("events:webhook-list")
    try:
        webhook = services.webhook_create(actor=actor, **form.cleaned_data)
    except ApplicationError as error:
        messages.error(request, error.message)
        return redirect("events:webhook-list")
    messages.success(request, f"Webhook {webhook.name} added; its signing secret is below.")
    return redirect("events:webhook-detail", pk=webhook.pk)


@login_required
def webhook_detail(request, pk: int):
    """One webhook: its secret (deployers and admins), its host override, its deliveries."""
    actor = Actor.from_request(request)
    webhook = selectors.webhook_for_actor(actor=actor, pk=pk)
    context = {
        "webhook": webhook,
        "deliveries": selectors.deliveries_for_webhook(webhook=webhook),
        "can_edit": actor.has_role(webhook.team_id, Role.DEPLOYER),
        "can_allow_host": request.user.is_staff,
    }
    return render(request, "events/webhook_detail.html", context)


@login_required
@require_POST
def webhook_action(request, pk: int, action: str):
    """Delete, rotate the secret of, ping, or (staff) allow/disallow the host of a webhook."""
    actor = Actor.from_request(request)
    webhook = selectors.webhook_for_actor(actor=actor, pk=pk)
    if action == "delete":
        services.webhook_delete(actor=actor, webhook=webhook)
        messages.success(request, f"Webhook {webhook.name} removed.")
        return redirect("events:webhook-list")
    if action == "rotate":
        services.webhook_rotate_secret(actor=actor, webhook=webhook)
        messages.success(request, "New signing secret issued; update your receiver.")
    elif action == "ping":
        services.webhook_ping(actor=actor, webhook=webhook)
        messages.success(request, "Test event queued.")
    elif action in ("allow-host", "disallow-host"):
        allow = action == "allow-host"
        services.webhook_allow_host(actor=actor, webhook=webhook, allow=allow)
        messages.success(request, "Host allowed." if allow else "Host override removed.")
    else:
        raise Http404("No such action.")
    return redirect("events:webhook-detail", pk=webhook.pk)
