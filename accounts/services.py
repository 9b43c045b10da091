"""Writes for accounts: memberships, tokens, and the audit record every other service writes."""

import hashlib
import re
import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from accounts import tokens
from accounts.actor import Actor
from accounts.models import (
    ApiToken,
    AuditEvent,
    ExternalIdentity,
    Membership,
    Role,
    Team,
    slug_validator,
)
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


def sign_in_failure_record(
    *, username: str, ip: str | None, path: str, locked_out: bool
) -> AuditEvent:
    """Audit one failed sign-in (a wrong password or API token), and whether it locked the
    address out. The caller is anonymous: the username is what they typed, not who they are."""
    actor = Actor(user=None, label="anonymous", ip=ip)
    action = "auth.lockout" if locked_out else "auth.sign_in_failed"
    with transaction.atomic():
        return audit_record(actor=actor, action=action, data={"username": username, "path": path})


def sso_roles_from_claim(value) -> dict[str, str]:
    """The team roles the operator's OIDC_TEAM_ROLE_MAP gives a claim value (a string or a
    list of strings); several values naming one team give the highest role."""
    values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    roles: dict[str, str] = {}
    for item in values:
        if not isinstance(item, str):
            continue
        for team_name, role in settings.OIDC_TEAM_ROLE_MAP.get(item, []):
            current = roles.get(team_name)
            if current is None or Role.rank(role) > Role.rank(current):
                roles[team_name] = role
    return roles


def _sso_username(preferred: str, *, issuer: str, subject: str) -> str:
    """A free username close to what the provider calls the user."""
    base = re.sub(r"[^\w.@+-]", "-", preferred or "")[:100].strip("-") or "user"
    user_model = get_user_model()
    if not user_model.objects.filter(username=base).exists():
        return base
    suffix = hashlib.sha256(f"{issuer} {subject}".encode()).hexdigest()[:8]
    return f"{base}-{suffix}"


@transaction.atomic
def sso_sign_in(*, issuer: str, subject: str, claims: dict[str, Any], ip: str | None):
    """Create or update the user a provider account signs in as, and make their memberships in
    the teams OIDC_TEAM_ROLE_MAP names match the team claim. Returns the user, or None when the
    user was deactivated here.

    Each change is its own audit row, in the team it concerns, so every team's log shows it.
    """
    if not subject or len(subject) > 255 or len(issuer) > 255:
        raise ApplicationError("The provider sent no usable subject.")
    user_model = get_user_model()
    identity = (
        ExternalIdentity.objects.select_for_update(of=("self",))
        .select_related("user")
        .filter(issuer=issuer, subject=subject)
        .first()
    )
    created = identity is None
    if created:
        preferred = str(claims.get(settings.OIDC_USERNAME_CLAIM) or claims.get("email") or "")
        user = user_model(username=_sso_username(preferred, issuer=issuer, subject=subject))
        user.set_unusable_password()
        try:
            with transaction.atomic():
                user.save()
                identity = ExternalIdentity.objects.create(
                    user=user, issuer=issuer, subject=subject
                )
        except IntegrityError:
            # Two first sign-ins of one account at once: the other one created it.
            raise ApplicationError("This account is being set up; sign in again.") from None
    user = identity.user
    if not user.is_active:
        return None
    email = str(claims.get("email") or "")[:254]
    if email != user.email:
        user.email = email
        user.save(update_fields=["email"])
    identity.last_sign_in_at = timezone.now()
    identity.save(update_fields=["last_sign_in_at", "updated_at"])
    actor = Actor(user=user, label=f"{user.get_username()} (single sign-on)", ip=ip)
    if created:
        audit_record(actor=actor, action="user.create", target=user, data={"issuer": issuer})
    wanted = sso_roles_from_claim(claims.get(settings.OIDC_TEAM_ROLE_CLAIM))
    managed = sorted({team for pairs in settings.OIDC_TEAM_ROLE_MAP.values() for team, _ in pairs})
    for team_name in managed:
        role = wanted.get(team_name)
        membership = Membership.objects.filter(user=user, team__name=team_name).first()
        if role is None and membership is not None:
            membership.delete()
            audit_record(
                actor=actor,
                action="membership.remove",
                team=membership.team_id,
                data={"username": user.get_username(), "source": "oidc"},
            )
        elif role is not None and (membership is None or membership.role != role):
            team, _ = Team.objects.get_or_create(name=team_name)
            membership, _ = Membership.objects.update_or_create(
                user=user, team=team, defaults={"role": role}
            )
            audit_record(
                actor=actor,
                action="membership.set",
                target=membership,
                team=team,
                data={"username": user.get_username(), "role": role, "source": "oidc"},
            )
    return user
