"""Writes for accounts: memberships, tokens, and the audit record every other service writes."""

import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils import timezone

from accounts import tokens
from accounts.actor import Actor
from accounts.models import ApiToken, AuditEvent, Membership, Role, Team, slug_validator
from common.errors import ApplicationError


def audit_record(
    *,
    actor: Actor,
    action: str,
    target: models.Model | None = None,
    team: Team | int | None = None,
    data: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one audit row; call it inside the transaction of the change it describes."""
    team_id = team.pk if isinstance(team, Team) else team
    return AuditEvent.objects.create(
        actor=actor.user,
        actor_label=actor.label[:200],
        action=action,
        object_type=target._meta.label_lower if target is not None else "",
        object_id=str(target.pk) if target is not None else "",
        object_repr=str(target)[:200] if target is not None else "",
        team_id=team_id,
        source_ip=actor.ip,
        data=data or {},
    )


@transaction.atomic
def membership_set(
    *, actor: Actor, username: str, team_name: str, role: str, create_user: bool = False
) -> tuple[Membership, str | None]:
    """Give a user a role in a team (creating the team, and the user if asked).

    Returns the membership and, when a user was created, its one-time random password.
    """
    if role not in Role.values:
        raise ApplicationError(f"Unknown role {role!r}; use one of {', '.join(Role.values)}.")
    try:
        slug_validator(team_name)
    except ValidationError as error:
        raise ApplicationError(f"Team name {team_name!r}: {error.messages[0]}") from None
    team, _ = Team.objects.get_or_create(name=team_name)
    user_model = get_user_model()
    password = None
    user = user_model.objects.filter(username=username).first()
    if user is None:
        if not create_user:
            raise ApplicationError(
                f"No user named {username!r} (pass --create-user to create one)."
            )
        password = secrets.token_urlsafe(15)
        user = user_model.objects.create_user(username=username, password=password)
    membership, _ = Membership.objects.update_or_create(
        user=user, team=team, defaults={"role": role}
    )
    audit_record(
        actor=actor,
        action="membership.set",
        target=membership,
        team=team,
        data={"username": username, "role": role, "user_created": password is not None},
    )
    return membership, password


@transaction.atomic
def token_create(
    *, actor: Actor, user, team: Team, name: str, days: int | None = None
) -> tuple[ApiToken, str]:
    """Issue a token for a member of a team; returns the row and the plain token (shown once)."""
    if days is None:
        days = settings.API_TOKEN_DEFAULT_DAYS
    if not 1 <= days <= settings.API_TOKEN_MAX_DAYS:
        raise ApplicationError(f"A token lives 1 to {settings.API_TOKEN_MAX_DAYS} days.")
    name = name.strip()
    if not name or len(name) > 100:
        raise ApplicationError("A token name is 1 to 100 characters.")
    if not Membership.objects.filter(user=user, team=team).exists():
        raise ApplicationError(f"{user} is not a member of {team}.")
    plain, prefix, digest = tokens.generate("mdk")
    token = ApiToken.objects.create(
        user=user,
        team=team,
        name=name,
        prefix=prefix,
        digest=digest,
        expires_at=timezone.now() + timedelta(days=days),
    )
    audit_record(
        actor=actor,
        action="token.create",
        target=token,
        team=team,
        data={"user": user.get_username(), "days": days},
    )
    return token, plain


@transaction.atomic
def token_revoke(*, actor: Actor, token: ApiToken) -> ApiToken:
    """Revoke a token now; revoking twice is harmless."""
    updated = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    token.refresh_from_db()
    if updated:
        audit_record(actor=actor, action="token.revoke", target=token, team=token.team_id)
    return token
