"""Pages: login/logout, the audit log, and the user's API tokens."""

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


class LoginView(auth_views.LoginView):
    """The sign-in page (there is no public sign-up: admins add members)."""

    template_name = "accounts/login.html"
    redirect_authenticated_user = True


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
