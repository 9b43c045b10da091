"""Every model in the admin has a changelist and a detail page that render for staff, and the
admin never shows a token or enrollment-code digest."""

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from deployments.models import EdgeDevice, EnrollmentCode
from tests.security.conftest import world  # noqa: F401  (one object of every kind)

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff():
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-root-123")
    client = Client()
    client.force_login(user)
    return client


def _page(staff, model, view: str, *args) -> int:
    meta = model._meta
    return staff.get(reverse(f"admin:{meta.app_label}_{meta.model_name}_{view}", args=args))


def test_every_admin_changelist_and_detail_page_renders(staff, world):  # noqa: F811
    broken = []
    for model in admin.site._registry:
        if _page(staff, model, "changelist").status_code != 200:
            broken.append(f"{model._meta.label} list")
        row = model._default_manager.order_by("pk").first()
        if row is not None and _page(staff, model, "change", row.pk).status_code != 200:
            broken.append(f"{model._meta.label} {row.pk}")
    assert broken == []


def test_digests_never_show_in_the_admin(staff, world):  # noqa: F811
    shown = 0
    for model, field in ((EdgeDevice, "token_digest"), (EnrollmentCode, "digest")):
        for row in model._default_manager.all():
            page = _page(staff, model, "change", row.pk)
            assert page.status_code == 200
            assert getattr(row, field).encode() not in page.content
            shown += 1
    assert shown >= 2  # the world has an enrolled device and its used code
