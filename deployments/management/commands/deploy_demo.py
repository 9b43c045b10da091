"""`manage.py deploy_demo`: the demo team's local target and a `house-prices` endpoint serving
`house-prices@production`. Running it again changes nothing."""

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from accounts.actor import Actor
from common.errors import ApplicationError
from deployments.models import Endpoint, Target
from deployments.services import endpoint_create

TEAM = "demo"
TARGET = "local"
ENDPOINT = "house-prices"
VERSION = "house-prices@production"


class Command(BaseCommand):
    help = "Deploy the demo model to the local target (after seed_demo). Idempotent."

    def handle(self, *args, **options):
        call_command("ensure_local_target", TEAM, "--name", TARGET, stdout=self.stdout)
        existing = Endpoint.objects.filter(name=ENDPOINT).first()
        if existing is not None:
            self.stdout.write(f"Endpoint {ENDPOINT} already exists ({existing.status}).")
            return
        try:
            endpoint = endpoint_create(
                actor=Actor.system("deploy_demo"), name=ENDPOINT,
                target=Target.objects.get(name=TARGET), version=VERSION,
            )  # fmt: skip
        except ApplicationError as error:
            raise CommandError(f"{error.message} (run seed_demo first)") from None
        self.stdout.write(
            self.style.SUCCESS(
                f"Endpoint {endpoint.name} serves {VERSION}; the worker starts it in a few "
                f"seconds (see /endpoints/{endpoint.name}/)."
            )
        )
