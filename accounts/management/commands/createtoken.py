"""`manage.py createtoken USERNAME TEAM [--name NAME] [--days N]`."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from accounts.actor import Actor
from accounts.models import Team
from accounts.services import token_create
from common.errors import ApplicationError


class Command(BaseCommand):
    help = "Create an API token for USERNAME in TEAM and print it once."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("team")
        parser.add_argument("--name", default="cli")
        parser.add_argument("--days", type=int, default=None)

    def handle(self, *args, username, team, name, days, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        team_row = Team.objects.filter(name=team).first()
        if team_row is None:
            raise CommandError(f"No team named {team!r}.")
        try:
            _token, plain = token_create(
                actor=Actor.system("createtoken"), user=user, team=team_row, name=name, days=days
            )
        except ApplicationError as error:
            raise CommandError(error.message) from None
        self.stdout.write(plain)
