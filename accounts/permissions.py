"""One place that turns roles into allow/deny for services, pages and the API."""

from django.core.exceptions import PermissionDenied
from django.http import Http404

from accounts.actor import Actor


def require_member(actor: Actor, team_id: int) -> None:
    """Another team's objects do not exist for the caller: 404, never 403."""
    if not actor.is_system and actor.role_in(team_id) is None:
        raise Http404("No such object.")


def require_role(actor: Actor, team_id: int, minimum: str) -> None:
    """404 for non-members, 403 for members whose role is below `minimum`."""
    require_member(actor, team_id)
    if not actor.has_role(team_id, minimum):
        raise PermissionDenied(f"This needs the {minimum} role or higher in this team.")
