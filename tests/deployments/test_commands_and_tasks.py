"""Management commands (ensure_local_target, deploy_demo) and the beat task."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from accounts.models import AuditEvent, Team
from deployments import services, tasks
from deployments.models import Endpoint, EndpointStatus, Release, Target
from registry.models import Alias, RegisteredModel
from tests.deployments.conftest import make_version

pytestmark = pytest.mark.django_db


def _run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_ensure_local_target_creates_once(team):
    assert "Created target local for alpha." in _run("ensure_local_target", "alpha")
    target = Target.objects.get()
    assert (target.name, target.kind, target.environment, target.team) == (
        "local", "local", "dev", team,
    )  # fmt: skip
    assert "already exists" in _run("ensure_local_target", "alpha")
    assert Target.objects.count() == 1
    assert AuditEvent.objects.filter(action="target.create").count() == 1


def test_ensure_local_target_refuses_unknown_teams_and_foreign_names(team, other_team):
    with pytest.raises(CommandError, match="No team named 'nobody'"):
        _run("ensure_local_target", "nobody")
    Target.objects.create(team=other_team, name="local", kind="local")
    with pytest.raises(CommandError, match="not alpha's local target"):
        _run("ensure_local_target", "alpha")


def test_deploy_demo_deploys_the_production_alias_once(db):
    team = Team.objects.create(name="demo")
    model = RegisteredModel.objects.create(team=team, name="house-prices")
    make_version(model, number=1)
    second = make_version(model, number=2)
    Alias.objects.create(model=model, name="production", version=second, is_protected=True)
    assert "Endpoint house-prices serves house-prices@production" in _run("deploy_demo")
    endpoint = Endpoint.objects.get()
    assert endpoint.target.name == "local"
    assert endpoint.desired_release.variants[0]["version"] == "house-prices:2"
    assert "already exists" in _run("deploy_demo")
    assert Release.objects.count() == 1


def test_deploy_demo_without_demo_models_says_what_to_do(db):
    Team.objects.create(name="demo")
    with pytest.raises(CommandError, match="run seed_demo first"):
        _run("deploy_demo")


def test_reconcile_all_enqueues_endpoints_and_skips_recent_failures(
    versions, dev_target, system, monkeypatch
):
    queued = []
    monkeypatch.setattr(tasks.reconcile_endpoint, "delay", queued.append)
    first = services.endpoint_create(actor=system, name="one", target=dev_target, version="adder:1")
    second = services.endpoint_create(
        actor=system, name="two", target=dev_target, version="adder:1"
    )
    Endpoint.objects.filter(pk=second.pk).update(
        status=EndpointStatus.FAILED, last_reconciled_at=timezone.now()
    )
    assert tasks.reconcile_all() == 1
    assert queued == [first.pk]


def test_reconcile_all_advances_a_baked_canary(versions, dev_target, system, monkeypatch):
    monkeypatch.setattr(tasks.reconcile_endpoint, "delay", lambda endpoint_id: None)
    endpoint = services.endpoint_create(
        actor=system, name="one", target=dev_target, version="adder:1"
    )
    release = services.endpoint_deploy(
        actor=system, endpoint=endpoint, version="adder:2",
        strategy=[{"weight": 10, "bake_seconds": 0}, {"weight": 40, "bake_seconds": 60}],
    )  # fmt: skip
    Release.objects.filter(pk=release.pk).update(live_at=timezone.now())
    Endpoint.objects.filter(pk=endpoint.pk).update(status=EndpointStatus.LIVE, live_release=release)
    tasks.reconcile_all()
    step = Endpoint.objects.get().desired_release
    assert step.number == 3
    assert [(v["version"], v["weight"]) for v in step.variants] == [
        ("adder:1", 60),
        ("adder:2", 40),
    ]
    assert step.strategy == [{"weight": 40, "bake_seconds": 60}]
    assert AuditEvent.objects.latest("id").action == "endpoint.rollout_step"


def test_reconcile_of_a_missing_endpoint_is_quiet(db):
    assert tasks.reconcile_endpoint(123456) == "gone"
