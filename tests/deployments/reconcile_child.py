"""Run one reconcile in a separate process (so a test can SIGKILL it at a named step).

    python -m tests.deployments.reconcile_child ENDPOINT_ID

The parent passes its test database name in MODELDECK_TEST_DATABASE_NAME and, optionally, the
pause step and pause file the reconciler's fault hook reads.
"""

import os
import sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
django.setup()

from django.conf import settings  # noqa: E402

# Before the first connection opens: point it at the parent's test database.
settings.DATABASES["default"]["NAME"] = os.environ["MODELDECK_TEST_DATABASE_NAME"]
settings.DEPLOYMENTS_DRAIN_SECONDS = 0.5

from deployments.reconciler import reconcile_endpoint  # noqa: E402

if __name__ == "__main__":
    print(reconcile_endpoint(endpoint_id=int(sys.argv[1])), flush=True)
