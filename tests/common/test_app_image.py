"""The app image (`Dockerfile`, used by `docker compose up --build`) holds every Django app the
settings install: `pip install .` there packages only the folders copied before it."""

import re
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]


def test_every_project_app_is_copied_into_the_image_before_it_is_installed():
    dockerfile = (ROOT / "Dockerfile").read_text()
    install = dockerfile.index("RUN pip install ./runtime .")
    copied = set(re.findall(r"^COPY (\w+) \1$", dockerfile[:install], re.MULTILINE))
    project_apps = {
        app.split(".")[0] for app in settings.INSTALLED_APPS if (ROOT / app.split(".")[0]).is_dir()
    }
    assert project_apps, settings.INSTALLED_APPS
    assert project_apps - {"tests"} <= copied, sorted(project_apps - copied)
