"""Pages: login/logout, the audit log, and the user's API tokens."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from accounts import selectors, services
from accounts.actor import Actor
from accounts.forms import TokenCreateForm
from common.errors import ApplicationError
from common.pagination import paginate


def login_context() -> dict:
    """Which ways to sign in the login page offers."""
    return {
        "sso_enabled": settings.OIDC_ENABLED,
        "sso_name": settings.OIDC_PROVIDER_NAME,
        "local_passwords_enabled": settings.LOCAL_PASSWORDS_ENABLED,
    }


class LoginView(auth_views.LoginView):
    """The sign-in page (there is no public sign-up: admins add members)."""

    template_name = "accounts/login.html"
    redirect_authenticated_user = True

    def post(self, request, *args, **kwargs):
        if not settings.LOCAL_PASSWORDS_ENABLED:
            # Refused before any password is checked; the backend is not installed either.
            context = {**login_context(), "next": ""}
            context["refused_message"] = "Password sign-in is turned off; use single sign-on."
            return render(request, self.template_name, context, status=403)
        return super().post(request, *args, **kwargs)

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context.update(login_context())
        if self.request.GET.get("sso") == "failed":
            context["refused_message"] = "Single sign-on did not sign you in. Try again."
        return context


logout_view = auth_views.LogoutView.as_view()


@login_required
def audit_log(request):
    """Audit events of the user's teams, newest first."""
    actor = Actor.from_request(request)
    action = request.GET.get("action", "")[:64]
    query = request.GET.get("q", "")[:100]
    events = selectors.audit_list_for_actor(actor=actor, action=action, query=query)
    page = paginate(request, events, per_page=50)
    return render(request, "accounts/audit_log.html", {"page": page, "action": action, "q": query})


@login_required
def token_list(request):
    """The user's tokens, and a form to create one (its value is shown once)."""
    actor = Actor.from_request(request)
    form = TokenCreateForm(request.POST or None, teams=selectors.team_list_for_actor(actor=actor))
    new_token = None
    if request.method == "POST" and form.is_valid():
        try:
            _token, new_token = services.token_create(
                actor=actor,
                user=request.user,
                team=form.cleaned_data["team"],
                name=form.cleaned_data["name"],
                days=form.cleaned_data["days"],
            )
        except ApplicationError as error:
            form.add_error(None, error.message)
    tokens = selectors.token_list_for_actor(actor=actor)
    return render(
        request, "accounts/tokens.html", {"form": form, "tokens": tokens, "new_token": new_token}
    )


@login_required
@require_POST
def token_revoke(request, pk: int):
    """Revoke one of the user's own tokens."""
    actor = Actor.from_request(request)
    token = get_object_or_404(selectors.token_list_for_actor(actor=actor), pk=pk)
    services.token_revoke(actor=actor, token=token)
    messages.success(request, f"Token {token.name} revoked.")
    return redirect("accounts:tokens")
