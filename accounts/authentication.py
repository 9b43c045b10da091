"""Bearer-token authentication for the API."""

from django.utils import timezone
from rest_framework import authentication, exceptions

from accounts import throttle, tokens
from accounts.models import ApiToken


class BearerTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer mdk_<prefix>_<secret>`; tokens in the query string are refused."""

    keyword = "Bearer"

    def authenticate(self, request):
        if any(key in request.query_params for key in ("token", "access_token", "api_key")):
            raise exceptions.AuthenticationFailed(
                "Send the token in the Authorization header, never in the URL."
            )
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        keyword, _, value = header.partition(" ")
        if keyword.lower() != self.keyword.lower():
            return None
        value = value.strip()
        parsed = tokens.parse(value)
        if parsed is None:
            raise exceptions.AuthenticationFailed("Malformed token.")
        prefix, _secret = parsed
        throttle.refuse_if_locked_out(request)
        token = ApiToken.objects.select_related("user", "team").filter(prefix=prefix).first()
        if token is None or not tokens.matches(value, token.digest):
            throttle.token_failure_record(request, prefix=prefix)
            raise exceptions.AuthenticationFailed("Invalid token.")
        if not token.is_active:
            raise exceptions.AuthenticationFailed("Token expired or revoked.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("User inactive.")
        now = timezone.now()
        # Touch at most once a minute so that every API call does not become a write.
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user, token

    def authenticate_header(self, request):
        return self.keyword
