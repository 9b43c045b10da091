"""Test settings: the base settings with faster hashing and a throwaway artifact folder."""

import os
import secrets
import tempfile

os.environ.setdefault("DEBUG", "true")
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
