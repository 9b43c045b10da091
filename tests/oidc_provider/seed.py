"""`python -m tests.oidc_provider.seed < spec.json`: migrate, then create the client and users."""

import json
import os
import sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.oidc_provider.settings")
django.setup()

from django.contrib.auth.models import Group, User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from oauth2_provider.models import Application  # noqa: E402

spec = json.load(sys.stdin)
call_command("migrate", verbosity=0, interactive=False)
Application.objects.update_or_create(
    client_id=spec["client_id"],
    defaults={
        "name": "Modeldeck",
        "client_secret": spec["client_secret"],
        "client_type": Application.CLIENT_CONFIDENTIAL,
        "authorization_grant_type": Application.GRANT_AUTHORIZATION_CODE,
        "redirect_uris": " ".join(spec["redirect_uris"]),
        "algorithm": Application.RS256_ALGORITHM,
        "skip_authorization": True,
    },
)
for person in spec["users"]:
    user, _ = User.objects.get_or_create(username=person["username"])
    user.email = person["email"]
    user.set_password(person["password"])
    user.save()
    user.groups.set([Group.objects.get_or_create(name=name)[0] for name in person["groups"]])
