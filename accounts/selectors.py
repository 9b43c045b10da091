"""Reads for accounts, always scoped to the caller's teams."""

from django.db.models import QuerySet

from accounts.actor import Actor
from accounts.models import ApiToken, AuditEvent, Team


def team_list_for_actor(*, actor: Actor) -> QuerySet[Team]:
    """Teams the actor belongs to (through a token: only the token's team)."""
    return Team.objects.filter(pk__in=actor.team_ids)


def audit_list_for_actor(
    *, actor: Actor, action: str = "", query: str = ""
) -> QuerySet[AuditEvent]:
    """Audit events of the actor's teams, newest first, optionally filtered."""
    events = AuditEvent.objects.filter(team_id__in=actor.team_ids).select_related("team")
    if action:
        events = events.filter(action__startswith=action)
    if query:
        events = events.filter(object_repr__icontains=query) | events.filter(
            actor_label__icontains=query
        )
    return events.order_by("-created_at", "-id")


def token_list_for_actor(*, actor: Actor) -> QuerySet[ApiToken]:
    """The actor's own tokens in the teams they can see."""
    return ApiToken.objects.filter(user=actor.user, team_id__in=actor.team_ids).select_related(
        "team"
    )
