"""Single sign-on with OpenID Connect (mozilla-django-oidc's code flow, PKCE and nonce).

mozilla-django-oidc checks the ID token's signature (the provider's JWKS) and nonce; this backend
adds the issuer and audience checks it leaves out, matches users by (issuer, subject) only, and
hands the claims to `services.sso_sign_in`, which syncs team memberships.
"""

import logging

import requests
from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from django.http import Http404
from django.urls import path
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from accounts import services
from accounts.actor import client_ip
from common.errors import ApplicationError

logger = logging.getLogger(__name__)


class SignInBackend(OIDCAuthenticationBackend):
    """Signs in the user of a verified ID token; a provider that cannot be reached is a failed
    sign-in, not a server error."""

    def authenticate(self, request, **kwargs):
        try:
            return super().authenticate(request, **kwargs)
        except requests.RequestException as error:
            # The exception text can hold the token endpoint's answer; the class name is enough.
            logger.warning("single sign-on failed: %s", type(error).__name__)
            return None

    def get_or_create_user(self, access_token, id_token, payload):
        audience = payload.get("aud")
        audiences = [audience] if isinstance(audience, str) else list(audience or [])
        if payload.get("iss") != settings.OIDC_OP_ISSUER:
            raise SuspiciousOperation("The ID token comes from another issuer.")
        if settings.OIDC_RP_CLIENT_ID not in audiences:
            raise SuspiciousOperation("The ID token is for another client.")
        claims = self.get_userinfo(access_token, id_token, payload)
        if not isinstance(claims, dict) or claims.get("sub") != payload.get("sub"):
            raise SuspiciousOperation("The userinfo subject differs from the ID token's.")
        # The team claim may be in the ID token only (some providers leave it out of userinfo).
        merged = {**payload, **claims}
        try:
            return services.sso_sign_in(
                issuer=payload["iss"],
                subject=str(payload.get("sub") or ""),
                claims=merged,
                ip=client_ip(self.request),
            )
        except ApplicationError as error:
            raise SuspiciousOperation(error.message) from None

    def get_user(self, user_id):
        user = super().get_user(user_id)
        return user if user is not None and self.user_can_authenticate(user) else None


def _only_when_enabled(view):
    def guarded(request, *args, **kwargs):
        if not settings.OIDC_ENABLED:
            raise Http404("Single sign-on is not configured.")
        return view(request, *args, **kwargs)

    return guarded


# Included at /oidc/ by config/urls.py; mozilla-django-oidc reverses these names.
urlpatterns = [
    path(
        "authenticate/",
        _only_when_enabled(OIDCAuthenticationRequestView.as_view()),
        name="oidc_authentication_init",
    ),
    path(
        "callback/",
        _only_when_enabled(OIDCAuthenticationCallbackView.as_view()),
        name="oidc_authentication_callback",
    ),
]
