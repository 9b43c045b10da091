"""`manage.py ensure_local_target TEAM`: a `local` dev target for a team, created if missing."""

from django.core.management.base import BaseCommand, CommandError

from accounts.actor import Actor
from accounts.models import Team
from common.errors import ApplicationError
from deployments.models import Environment, Target, TargetKind
from deployments.services import target_create


class Command(BaseCommand):
    help = "Create a local-process target for TEAM unless it exists. Idempotent."

    def add_arguments(self, parser):
        parser.add_argument("team", help="team name")
        parser.add_argument("--name", default="local", help="target name (default: local)")
        parser.add_argument(
            "--environment",
            default=Environment.DEV,
            choices=Environment.values,
            help="environment of a new target (default: dev)",
        )

    def handle(self, *args, team, name, environment, **options):
        team_row = Team.objects.filter(name=team).first()
        if team_row is None:
            raise CommandError(f"No team named {team!r} (create it with addmember).")
        existing = Target.objects.filter(name=name).first()
        if existing is not None:
            if existing.team_id != team_row.pk or existing.kind != TargetKind.LOCAL:
                raise CommandError(f"Target {name!r} exists and is not {team}'s local target.")
            self.stdout.write(f"Target {name} already exists for {team}.")
            return
        try:
            target = target_create(
                actor=Actor.system("ensure_local_target"),
                team=team_row,
                name=name,
                kind=TargetKind.LOCAL,
                environment=environment,
                description="Processes on the Modeldeck machine (127.0.0.1).",
            )
        except ApplicationError as error:
            raise CommandError(error.message) from None
        self.stdout.write(self.style.SUCCESS(f"Created target {target.name} for {team}."))
