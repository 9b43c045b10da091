"""The admin inspects registry rows; its actions go through the services."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from accounts.actor import Actor
from accounts.models import AuditEvent
from registry import services
from registry.models import ModelVersion, RegisteredModel
from tests.registry import onnx_files
from tests.registry.conftest import register

pytestmark = pytest.mark.django_db


@pytest.fixture
def superuser_client():
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-root-123")
    client = Client()
    client.force_login(user)
    return client


def test_admin_lists_and_filters(superuser_client, registered, scientist_actor, onnx_path):
    register(scientist_actor, registered, onnx_path(onnx_files.linear_regressor()))
    assert superuser_client.get("/admin/registry/registeredmodel/").status_code == 200
    page = superuser_client.get("/admin/registry/modelversion/?status__exact=pending")
    assert page.status_code == 200 and b"iris:1" in page.content
    assert superuser_client.get("/admin/registry/registeredmodel/add/").status_code == 403


def test_admin_actions_use_the_services(superuser_client, registered, scientist_actor, onnx_path):
    version = register(scientist_actor, registered, onnx_path(onnx_files.linear_regressor()))
    pending = register(scientist_actor, registered, onnx_path(onnx_files.linear_regressor()))
    system = Actor.system("tests")
    services.version_mark_validating(actor=system, version_id=version.pk)
    services.version_record_validation(actor=system, version_id=version.pk, ok=True)
    response = superuser_client.post(
        "/admin/registry/modelversion/",
        {"action": "approve", "_selected_action": [version.pk, pending.pk]},
        follow=True,
    )
    assert b"Approved 1 item(s)." in response.content
    assert b"Only ready versions can be approved" in response.content
    assert ModelVersion.objects.get(pk=version.pk).approval == "approved"
    assert (
        AuditEvent.objects.filter(
            action="version.approved", actor_label="root (admin site)"
        ).count()
        == 1
    )
    superuser_client.post(
        "/admin/registry/registeredmodel/",
        {"action": "archive", "_selected_action": [registered.pk]},
    )
    assert RegisteredModel.objects.get().is_archived
