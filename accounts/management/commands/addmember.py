"""`manage.py addmember USERNAME TEAM ROLE [--create-user]`."""

from django.core.management.base import BaseCommand, CommandError

from accounts.actor import Actor
from accounts.models import Role
from accounts.services import membership_set
from common.errors import ApplicationError


class Command(BaseCommand):
    help = "Give USERNAME the ROLE in TEAM (creating the team, and with --create-user the user)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("team")
        parser.add_argument("role", choices=Role.values)
        parser.add_argument(
            "--create-user",
            action="store_true",
            help="create the user with a random password, printed once",
        )

    def handle(self, *args, username, team, role, create_user, **options):
        try:
            membership, password = membership_set(
                actor=Actor.system("addmember"),
                username=username,
                team_name=team,
                role=role,
                create_user=create_user,
            )
        except ApplicationError as error:
            raise CommandError(error.message) from None
        self.stdout.write(f"{membership.user.get_username()} is {role} in {membership.team.name}.")
        if password:
            self.stdout.write(f"Created user {username} with password: {password}")
            self.stdout.write("This password is shown once; change it after the first login.")
