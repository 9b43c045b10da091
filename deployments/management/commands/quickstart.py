"""`manage.py quickstart`: demo team, demo admin, demo models and a live demo endpoint.

It lives in deployments, the highest app it needs (accounts for the admin, the registry for
the demo models through `seed_demo`, deployments for the endpoint); common holds no domain.
"""

import secrets

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from accounts.actor import Actor
from accounts.models import Role
from accounts.services import membership_set

DEMO_TEAM = "demo"
DEMO_ADMIN = "admin"


class Command(BaseCommand):
    help = "Prepare the embedded demo: an admin, demo models, and a live endpoint. Idempotent."

    def handle(self, *args, **options):
        user_model = get_user_model()
        admin = user_model.objects.filter(username=DEMO_ADMIN).first()
        password = None
        if admin is None:
            password = secrets.token_urlsafe(12)
            admin = user_model.objects.create_superuser(DEMO_ADMIN, password=password)
        membership_set(
            actor=Actor.system("quickstart"),
            username=DEMO_ADMIN,
            team_name=DEMO_TEAM,
            role=Role.ADMIN,
        )
        for command in ("seed_demo", "deploy_demo"):
            try:
                call_command(command, stdout=self.stdout)
            except Exception as error:  # the demo is a convenience: report and go on
                self.stderr.write(f"{command}: {error}")
        self.stdout.write("")
        if password:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Demo admin created: {DEMO_ADMIN} / {password}  (shown once; "
                    f"sign in on the dashboard's address)"
                )
            )
        else:
            self.stdout.write(
                f"Sign in as {DEMO_ADMIN} (password shown on the first run; reset it with "
                f"`.venv/bin/python manage.py changepassword {DEMO_ADMIN}`)."
            )
