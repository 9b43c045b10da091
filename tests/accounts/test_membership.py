import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from accounts.actor import Actor
from accounts.models import AuditEvent, Membership, Role
from accounts.permissions import require_role
from tests.conftest import actor_for

pytestmark = pytest.mark.django_db


def test_addmember_creates_team_and_user_and_prints_password_once(capsys):
    call_command("addmember", "alice", "ml-team", "deployer", "--create-user")
    output = capsys.readouterr().out
    password = output.split("password: ")[1].split()[0]
    user = get_user_model().objects.get(username="alice")
    assert user.check_password(password)
    membership = Membership.objects.get(user=user)
    assert (membership.team.name, membership.role) == ("ml-team", "deployer")
    event = AuditEvent.objects.get(action="membership.set")
    assert event.team == membership.team
    assert event.actor_label == "system:addmember"


def test_addmember_changes_a_role_without_new_password(capsys):
    call_command("addmember", "alice", "ml-team", "viewer", "--create-user")
    capsys.readouterr()
    call_command("addmember", "alice", "ml-team", "admin")
    assert "password" not in capsys.readouterr().out
    assert Membership.objects.get().role == "admin"


def test_addmember_refuses_unknown_user_without_create_flag():
    with pytest.raises(CommandError, match="No user named 'ghost'"):
        call_command("addmember", "ghost", "ml-team", "viewer")
    assert Membership.objects.count() == 0


@pytest.mark.parametrize("team_name", ["Bad Team", "../etc", "x" * 64, "_lead"])
def test_addmember_refuses_bad_team_names(team_name):
    with pytest.raises(CommandError, match="Team name"):
        call_command("addmember", "alice", team_name, "viewer", "--create-user")
    assert get_user_model().objects.count() == 0


ROLE_ORDER = [Role.VIEWER, Role.SCIENTIST, Role.DEPLOYER, Role.ADMIN]


@pytest.mark.parametrize("role", ROLE_ORDER)
@pytest.mark.parametrize("minimum", ROLE_ORDER)
def test_require_role_follows_the_role_order(team, role, minimum):
    from django.core.exceptions import PermissionDenied

    from tests.factories import MembershipFactory

    user = MembershipFactory(team=team, role=role).user
    actor = actor_for(user)
    allowed = ROLE_ORDER.index(role) >= ROLE_ORDER.index(minimum)
    if allowed:
        require_role(actor, team.pk, minimum)
    else:
        with pytest.raises(PermissionDenied):
            require_role(actor, team.pk, minimum)


def test_non_members_get_404_not_403(team, outsider):
    from django.http import Http404

    with pytest.raises(Http404):
        require_role(actor_for(outsider), team.pk, Role.VIEWER)


def test_system_actor_may_act_in_any_team(team):
    require_role(Actor.system("reconciler"), team.pk, Role.ADMIN)


def test_audit_events_are_append_only(team):
    from django.core.exceptions import ValidationError

    from accounts.services import audit_record

    event = audit_record(actor=Actor.system("t"), action="x.y", team=team)
    event.action = "changed"
    with pytest.raises(ValidationError):
        event.save()
    with pytest.raises(ValidationError):
        event.delete()
    assert AuditEvent.objects.get().action == "x.y"
