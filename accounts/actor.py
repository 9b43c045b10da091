"""Who is acting: a person in the browser, a CI token, or Modeldeck itself."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser

from accounts.models import ApiToken, Membership, Role, Team


def client_ip(request) -> str | None:
    """The caller's address, trusting X-Forwarded-For only for the configured proxy hops."""
    address = request.META.get("REMOTE_ADDR")
    hops = settings.TRUSTED_PROXY_COUNT
    if hops:
        forwarded = [
            part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
        ]
        forwarded = [part for part in forwarded if part]
        if len(forwarded) >= hops:
            address = forwarded[-hops]
    try:
        return str(ipaddress.ip_address(address)) if address else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Actor:
    """The caller of a service: the user (if any), their roles per team, and where from.

    A token narrows a user to the token's team; a browser session sees all the user's teams.
    """

    user: AbstractBaseUser | None
    label: str
    ip: str | None = None
    token: ApiToken | None = None
    roles: dict[int, str] = field(default_factory=dict)

    @classmethod
    def from_request(cls, request) -> Actor:
        """Build the actor for a request, once; later calls return the cached one."""
        cached = getattr(request, "_modeldeck_actor", None)
        if cached is not None:
            return cached
        user = request.user if request.user.is_authenticated else None
        token = getattr(request, "auth", None)
        token = token if isinstance(token, ApiToken) else None
        roles: dict[int, str] = {}
        if user is not None:
            memberships = Membership.objects.filter(user=user)
            if token is not None:
                memberships = memberships.filter(team_id=token.team_id)
            roles = dict(memberships.values_list("team_id", "role"))
        label = user.get_username() if user else "anonymous"
        if token is not None:
            label = f"{label} (token {token.name})"
        actor = cls(user=user, label=label, ip=client_ip(request), token=token, roles=roles)
        request._modeldeck_actor = actor
        return actor

    @classmethod
    def for_admin_site(cls, request) -> Actor:
        """Staff in the Django admin act with their team roles; superusers as admins of every
        team."""
        actor = cls.from_request(request)
        if not request.user.is_superuser:
            return actor
        roles = dict.fromkeys(Team.objects.values_list("pk", flat=True), Role.ADMIN)
        label = f"{request.user.get_username()} (admin site)"
        return cls(user=request.user, label=label, ip=client_ip(request), roles=roles)

    @classmethod
    def system(cls, component: str) -> Actor:
        """Modeldeck acting on its own (the reconciler, a guardrail)."""
        return cls(user=None, label=f"system:{component}")

    @property
    def is_system(self) -> bool:
        """Whether Modeldeck itself is acting, which every team's rules allow."""
        return self.user is None and self.label.startswith("system:")

    @property
    def team_ids(self) -> list[int]:
        """The teams whose objects this actor may see."""
        return list(self.roles)

    def role_in(self, team_id: int) -> str | None:
        """The actor's role in a team, or None when not a member."""
        return self.roles.get(team_id)

    def has_role(self, team_id: int, minimum: str) -> bool:
        """Whether the actor holds at least `minimum` in the team."""
        if self.is_system:
            return True
        role = self.roles.get(team_id)
        return role is not None and Role.at_least(role, minimum)
