"""Every model in the admin has a changelist and a detail page that render for staff, and the
admin never shows a token or enrollment-code digest."""

import pytest
from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from accounts.models import AuditEvent
from deployments.models import Endpoint, LocalProcess, Release, Target
from edge.models import EdgeDevice, EdgeRollout, EnrollmentCode, RolloutStatus
from registry.models import Alias
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


# --- firsthour: read-only models, plurals, ops actions through the services ----------------

READ_ONLY = [
    "monitoring.Alert",
    "monitoring.AlertRule",
    "monitoring.DriftReport",
    "monitoring.ScrapeState",
    "events.Webhook",
    "events.WebhookDelivery",
    "monitoring.Experiment",
    "monitoring.RollbackPolicy",
    "deployments.Endpoint",
    "deployments.Release",
    "deployments.LocalProcess",
    "edge.EdgeRollout",
    "registry.Alias",
    "accounts.AuditEvent",
]


def test_read_only_models_offer_no_add_or_change_and_no_add_page(staff, world):  # noqa: F811
    registered = {model._meta.label: model for model in admin.site._registry}
    for label in READ_ONLY:
        model = registered[label]
        model_admin = admin.site._registry[model]
        request = staff.get("/").wsgi_request
        request.user = get_user_model().objects.get(username="root")
        assert not model_admin.has_add_permission(request), label
        assert not model_admin.has_change_permission(request), label
        assert _page(staff, model, "add").status_code == 403, label
        changelist = _page(staff, model, "changelist").content.decode()
        meta = model._meta
        assert reverse(f"admin:{meta.app_label}_{meta.model_name}_add") not in changelist, label


def test_every_add_page_left_saves_or_shows_errors_never_a_500(staff, world):  # noqa: F811
    for model, model_admin in admin.site._registry.items():
        request = staff.get("/").wsgi_request
        request.user = get_user_model().objects.get(username="root")
        if not model_admin.has_add_permission(request):
            continue
        meta = model._meta
        url = reverse(f"admin:{meta.app_label}_{meta.model_name}_add")
        assert staff.get(url).status_code == 200, meta.label
        assert staff.post(url, {}).status_code in (200, 302), meta.label


def _regular_plural(singular: str) -> str:
    if singular.endswith(("s", "x", "ch", "sh")):
        return singular + "es"
    if singular.endswith("y") and singular[-2:-1] not in "aeiou":
        return singular[:-1] + "ies"
    return singular + "s"


def test_every_model_has_a_correct_plural():
    from django.apps import apps

    uncountable = {"feedback"}
    wrong = []
    for model in apps.get_models():
        meta = model._meta
        if meta.app_label not in {
            "accounts",
            "registry",
            "deployments",
            "edge",
            "monitoring",
            "events",
        }:
            continue
        singular = str(meta.verbose_name)
        expected = singular if singular in uncountable else _regular_plural(singular)
        if str(meta.verbose_name_plural) != expected:
            wrong.append(f"{meta.label}: {meta.verbose_name_plural!r}, not {expected!r}")
    assert wrong == []
    assert Alias._meta.verbose_name_plural == "aliases"
    assert LocalProcess._meta.verbose_name_plural == "local processes"


def _action(staff, model, action: str, rows) -> str:
    meta = model._meta
    url = reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")
    answer = staff.post(
        url,
        {"action": action, ACTION_CHECKBOX_NAME: [str(row.pk) for row in rows]},
        follow=True,
    )
    assert answer.status_code == 200
    return answer.content.decode()


def test_ops_stop_and_roll_back_endpoints_in_the_admin_with_audit(staff, world):  # noqa: F811
    endpoint = world.endpoint
    first = endpoint.releases.get(number=1)
    page = _action(staff, Release, "rollback_to", [first])
    assert "Rolled back to 1 item(s)." in page
    endpoint.refresh_from_db()
    assert endpoint.desired_release.restores_id == first.pk
    # The earlier release's state, its scale made explicit (one replica where it set none).
    assert endpoint.desired_release.variants == [
        {"replicas": 1, **variant} for variant in first.variants
    ]
    rolled = AuditEvent.objects.get(action="endpoint.rollback")
    assert rolled.actor_label == "root (admin site)"

    page = _action(staff, Endpoint, "stop", [endpoint])
    assert "Stopped 1 item(s)." in page
    endpoint.refresh_from_db()
    assert endpoint.desired_release.variants == []
    assert "Stopped from the admin site." in endpoint.desired_release.note
    assert endpoint.desired_release.actor_label == "root (admin site)"


def test_ops_cancel_a_fleet_rollout_in_the_admin(staff, world):  # noqa: F811
    rollout = world.rollout
    assert rollout.status == RolloutStatus.RUNNING
    page = _action(staff, EdgeRollout, "cancel", [rollout])
    assert "Cancelled 1 item(s)." in page
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.CANCELLED
    assert AuditEvent.objects.filter(action="edge.rollout.cancel").count() == 1


def test_targets_are_edited_in_the_admin_and_not_deleted_while_in_use(staff, world):  # noqa: F811
    target = world.target
    url = reverse("admin:deployments_target_change", args=[target.pk])
    saved = staff.post(
        url,
        {"environment": target.environment, "config": "{}", "description": "edited in admin"},
    )
    assert saved.status_code == 302
    target.refresh_from_db()
    assert target.description == "edited in admin"
    assert AuditEvent.objects.filter(action="target.update").count() == 1

    bad = staff.post(url, {"environment": "production", "config": "{}", "description": ""})
    assert bad.status_code == 200
    assert "cannot change while endpoints use it" in bad.content.decode()

    delete_url = reverse("admin:deployments_target_delete", args=[target.pk])
    refused = staff.post(delete_url, {"post": "yes"}, follow=True)
    assert "is used by 1 endpoint(s): secret-endpoint" in refused.content.decode()
    assert Target.objects.filter(pk=target.pk).exists()
    page = _action(staff, Target, "delete_targets", [target])
    assert "is used by 1 endpoint(s)" in page
    assert Target.objects.filter(pk=target.pk).exists()

    spare = Target.objects.create(team=target.team, name="spare-target", kind="local")
    gone = staff.post(
        reverse("admin:deployments_target_delete", args=[spare.pk]), {"post": "yes"}, follow=True
    )
    assert gone.status_code == 200
    assert not Target.objects.filter(pk=spare.pk).exists()
    assert AuditEvent.objects.filter(action="target.delete").count() == 1
