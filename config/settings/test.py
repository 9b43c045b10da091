"""Test settings: the base settings with faster hashing and a throwaway artifact folder."""

import os
import secrets
import tempfile

os.environ.setdefault("DEBUG", "true")
if os.environ.get("PYTEST_XDIST_WORKER", "") not in (
    "",
    os.environ.get("MODELDECK_TEST_VAR_DIR_WORKER"),
):
    # Each pytest-xdist worker gets a var dir of its own (the controller's is inherited through
    # the environment): runtime folders, SQLite files and the installation id that names local
    # serving processes must not be shared, or one worker's cleanup kills another's servers.
    # Processes a worker starts (a reconcile child, a Celery worker) inherit the worker's dir.
    os.environ["MODELDECK_TEST_VAR_DIR_WORKER"] = os.environ["PYTEST_XDIST_WORKER"]
    os.environ["MODELDECK_VAR_DIR"] = tempfile.mkdtemp(
        prefix=f"modeldeck-test-{os.environ['PYTEST_XDIST_WORKER']}-"
    )
os.environ.setdefault("MODELDECK_VAR_DIR", tempfile.mkdtemp(prefix="modeldeck-test-"))
# One random key per test run, inherited by the processes the tests start.
os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))

from config.settings.base import *  # noqa: F403
from config.settings.base import CELERY_BROKER_URL

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Tests call tasks directly; the on-commit enqueue still goes to the configured broker, so with
# no broker configured it goes to an in-memory one instead of a folder.
if CELERY_BROKER_URL == "filesystem://":
    CELERY_BROKER_URL = "memory://"
    CELERY_BROKER_TRANSPORT = "memory"  # not the base settings' filesystem transport
    CELERY_BROKER_TRANSPORT_OPTIONS = {}
STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}  # noqa: F405
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # noqa: F405  (whitenoise warns when missing)
if DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3":  # noqa: F405
    # One test database per run, so that runs sharing a server (developers, CI) never drop each
    # other's database; pytest-django still destroys it at the end of the run.
    DATABASES["default"]["TEST"] = {"NAME": f"test_modeldeck_{os.getpid()}"}  # noqa: F405
# Old servers stop as soon as traffic moved away (fewer processes per test); the warm-window
# tests open it themselves.
DEPLOYMENTS_WARM_SECONDS = 0.0
