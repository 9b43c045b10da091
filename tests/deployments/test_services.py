"""Endpoint services: one release + one audit row per action, rules, roles, team scoping."""

import pytest
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.utils import timezone

from accounts.models import AuditEvent
from common.errors import ApplicationError
from deployments import services
from deployments.models import (
    DeploymentEvent,
    Endpoint,
    EndpointStatus,
    Release,
    ReleaseReason,
    Target,
)
from registry.models import Alias
from tests.deployments.conftest import make_version

pytestmark = pytest.mark.django_db


def _snapshot():
    return (
        Release.objects.count(),
        AuditEvent.objects.count(),
        DeploymentEvent.objects.count(),
        list(Endpoint.objects.values_list("generation", "desired_release_id")),
    )


def _traffic(release):
    return [(v["version"], v["weight"], v["role"], v["mirror_percent"]) for v in release.variants]


def _mark_live(release):
    Release.objects.filter(pk=release.pk).update(live_at=timezone.now())
    Endpoint.objects.filter(pk=release.endpoint_id).update(
        live_release=release, status=EndpointStatus.LIVE
    )


@pytest.fixture
def scientist_actor(scientist, make_actor):
    return make_actor(scientist)


@pytest.fixture
def endpoint(versions, dev_target, scientist_actor):
    return services.endpoint_create(
        actor=scientist_actor, name="adder-api", target=dev_target, version="adder:1"
    )


class TestOneReleaseAndOneAuditPerAction:
    def test_create_writes_release_1_at_100_percent(
        self, endpoint, django_capture_on_commit_callbacks
    ):
        release = endpoint.desired_release
        assert release.number == 1
        assert release.reason == ReleaseReason.DEPLOY
        assert _traffic(release) == [("adder:1", 100, "primary", 0)]
        assert endpoint.generation == 1
        assert endpoint.status == EndpointStatus.PENDING
        assert AuditEvent.objects.filter(action="endpoint.create").count() == 1
        assert AuditEvent.objects.count() == 1
        assert DeploymentEvent.objects.filter(endpoint=endpoint).count() == 1

    def test_every_action_writes_exactly_one_release_and_one_audit_row(
        self, endpoint, scientist_actor, django_capture_on_commit_callbacks
    ):
        _mark_live(endpoint.desired_release)
        actions = [
            ("endpoint.deploy", lambda: services.endpoint_deploy(
                actor=scientist_actor, endpoint=endpoint, version="adder:2", weight=10)),
            ("endpoint.traffic", lambda: services.endpoint_set_traffic(
                actor=scientist_actor, endpoint=endpoint, variants=[
                    {"version": "adder:1", "weight": 50, "role": "primary"},
                    {"version": "adder:2", "weight": 50, "role": "candidate"},
                ])),
            ("endpoint.promote", lambda: services.endpoint_promote(
                actor=scientist_actor, endpoint=endpoint)),
            ("endpoint.rollback", lambda: services.endpoint_rollback(
                actor=scientist_actor, endpoint=endpoint, release_number=1)),
            ("endpoint.stop", lambda: services.endpoint_stop(
                actor=scientist_actor, endpoint=endpoint)),
        ]  # fmt: skip
        for number, (action, call) in enumerate(actions, start=2):
            releases, audits, events, _ = _snapshot()
            with django_capture_on_commit_callbacks() as callbacks:
                release = call()
            assert release.number == number
            assert Release.objects.count() == releases + 1
            assert AuditEvent.objects.count() == audits + 1
            assert AuditEvent.objects.latest("id").action == action
            assert DeploymentEvent.objects.count() == events + 1
            assert len(callbacks) == 1  # the reconcile is enqueued once, after commit
            endpoint.refresh_from_db()
            assert endpoint.generation == number
            assert endpoint.desired_release_id == release.pk
            assert endpoint.status == EndpointStatus.PENDING

    def test_canary_then_promote_then_rollback_restores_previous_weights(
        self, endpoint, scientist_actor
    ):
        _mark_live(endpoint.desired_release)
        canary = services.endpoint_deploy(
            actor=scientist_actor, endpoint=endpoint, version="adder:2", weight=10
        )
        assert _traffic(canary) == [("adder:1", 90, "primary", 0), ("adder:2", 10, "candidate", 0)]
        _mark_live(canary)
        promoted = services.endpoint_promote(actor=scientist_actor, endpoint=endpoint)
        assert _traffic(promoted) == [("adder:2", 100, "primary", 0)]
        _mark_live(promoted)
        rolled_back = services.endpoint_rollback(actor=scientist_actor, endpoint=endpoint)
        assert rolled_back.restores_id == canary.pk
        assert rolled_back.reason == ReleaseReason.ROLLBACK
        assert _traffic(rolled_back) == _traffic(canary)

    def test_deploy_at_100_replaces_and_keeps_shadows(self, endpoint, scientist_actor):
        services.endpoint_set_traffic(
            actor=scientist_actor, endpoint=endpoint, variants=[
                {"version": "adder:1", "weight": 100, "role": "primary"},
                {"version": "adder:3", "weight": 25, "role": "shadow"},
            ],
        )  # fmt: skip
        release = services.endpoint_deploy(
            actor=scientist_actor, endpoint=endpoint, version="adder:2"
        )
        assert _traffic(release) == [("adder:2", 100, "primary", 0), ("adder:3", 0, "shadow", 25)]

    def test_deploy_by_alias(self, endpoint, versions, scientist_actor):
        Alias.objects.create(model=versions[3].model, name="champion", version=versions[3])
        release = services.endpoint_deploy(
            actor=scientist_actor, endpoint=endpoint, version="adder@champion", weight=20
        )
        assert _traffic(release)[1] == ("adder:3", 20, "candidate", 0)

    def test_strategy_is_stored_and_starts_at_its_first_step(self, endpoint, scientist_actor):
        steps = [{"weight": 10, "bake_seconds": 60}, {"weight": 50, "bake_seconds": 60},
                 {"weight": 100, "bake_seconds": 0}]  # fmt: skip
        release = services.endpoint_deploy(
            actor=scientist_actor, endpoint=endpoint, version="adder:2", strategy=steps
        )
        assert release.strategy == steps
        assert _traffic(release)[1] == ("adder:2", 10, "candidate", 0)

    def test_rollout_advances_after_bake_and_promotes_at_the_last_step(
        self, endpoint, scientist_actor
    ):
        steps = [{"weight": 10, "bake_seconds": 0}, {"weight": 100, "bake_seconds": 0}]
        release = services.endpoint_deploy(
            actor=scientist_actor, endpoint=endpoint, version="adder:2", strategy=steps
        )
        assert services.endpoint_advance_rollout(endpoint_id=endpoint.pk) is None  # not live yet
        _mark_live(release)
        step = services.endpoint_advance_rollout(endpoint_id=endpoint.pk)
        assert step.reason == ReleaseReason.ROLLOUT_STEP
        assert _traffic(step) == [("adder:2", 100, "primary", 0)]
        assert step.strategy == []


class TestRollbackTarget:
    def test_default_is_the_last_live_release_before_the_current_one(
        self, endpoint, scientist_actor
    ):
        first = endpoint.desired_release
        _mark_live(first)
        second = services.endpoint_deploy(
            actor=scientist_actor, endpoint=endpoint, version="adder:2"
        )
        _mark_live(second)
        # Release 3 never went live (still progressing); the default skips it too.
        services.endpoint_deploy(actor=scientist_actor, endpoint=endpoint, version="adder:3")
        rollback = services.endpoint_rollback(actor=scientist_actor, endpoint=endpoint)
        assert rollback.restores_id == second.pk
        assert _traffic(rollback) == [("adder:2", 100, "primary", 0)]

    def test_default_when_current_is_live_goes_to_the_one_before(self, endpoint, scientist_actor):
        first = endpoint.desired_release
        _mark_live(first)
        second = services.endpoint_deploy(
            actor=scientist_actor, endpoint=endpoint, version="adder:2"
        )
        _mark_live(second)
        rollback = services.endpoint_rollback(actor=scientist_actor, endpoint=endpoint)
        assert rollback.restores_id == first.pk
        assert rollback.number == 3

    def test_explicit_release_number(self, endpoint, scientist_actor):
        services.endpoint_deploy(actor=scientist_actor, endpoint=endpoint, version="adder:2")
        services.endpoint_deploy(actor=scientist_actor, endpoint=endpoint, version="adder:3")
        rollback = services.endpoint_rollback(
            actor=scientist_actor, endpoint=endpoint, release_number=2
        )
        assert _traffic(rollback) == [("adder:2", 100, "primary", 0)]
        assert rollback.restores.number == 2


BAD_INPUTS = {
    "unknown version": lambda a, e: services.endpoint_deploy(
        actor=a, endpoint=e, version="adder:9"),
    "unknown alias": lambda a, e: services.endpoint_deploy(actor=a, endpoint=e, version="adder@x"),
    "unknown model": lambda a, e: services.endpoint_deploy(actor=a, endpoint=e, version="nope:1"),
    "malformed reference": lambda a, e: services.endpoint_deploy(
        actor=a, endpoint=e, version="adder 1"),
    "weight above 100": lambda a, e: services.endpoint_deploy(
        actor=a, endpoint=e, version="adder:2", weight=101),
    "negative weight": lambda a, e: services.endpoint_deploy(
        actor=a, endpoint=e, version="adder:2", weight=-1),
    "strategy not rising": lambda a, e: services.endpoint_deploy(
        actor=a, endpoint=e, version="adder:2",
        strategy=[{"weight": 50, "bake_seconds": 1}, {"weight": 20, "bake_seconds": 1}]),
    "candidate equal to primary": lambda a, e: services.endpoint_deploy(
        actor=a, endpoint=e, version="adder:1", weight=10),
    "weights not summing to 100": lambda a, e: services.endpoint_set_traffic(
        actor=a, endpoint=e, variants=[
            {"version": "adder:1", "weight": 60, "role": "primary"},
            {"version": "adder:2", "weight": 30, "role": "candidate"}]),
    "two primaries": lambda a, e: services.endpoint_set_traffic(
        actor=a, endpoint=e, variants=[
            {"version": "adder:1", "weight": 50, "role": "primary"},
            {"version": "adder:2", "weight": 50, "role": "primary"}]),
    "same version twice": lambda a, e: services.endpoint_set_traffic(
        actor=a, endpoint=e, variants=[
            {"version": "adder:1", "weight": 50, "role": "primary"},
            {"version": "adder:1", "weight": 50, "role": "candidate"}]),
    "unknown role": lambda a, e: services.endpoint_set_traffic(
        actor=a, endpoint=e, variants=[{"version": "adder:1", "weight": 100, "role": "boss"}]),
    "empty variants": lambda a, e: services.endpoint_set_traffic(actor=a, endpoint=e, variants=[]),
    "promote without candidate": lambda a, e: services.endpoint_promote(actor=a, endpoint=e),
    "rollback without live history": lambda a, e: services.endpoint_rollback(actor=a, endpoint=e),
    "rollback to missing release": lambda a, e: services.endpoint_rollback(
        actor=a, endpoint=e, release_number=42),
    "rollback to the current release": lambda a, e: services.endpoint_rollback(
        actor=a, endpoint=e, release_number=1),
    "version not ready": lambda a, e: services.endpoint_deploy(
        actor=a, endpoint=e, version="adder:4"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_a_readable_400_and_writes_nothing(
    case, endpoint, adder_model, scientist_actor
):
    make_version(adder_model, number=4, status="invalid")
    before = _snapshot()
    with pytest.raises(ApplicationError) as raised:
        BAD_INPUTS[case](scientist_actor, endpoint)
    assert raised.value.status == 400
    assert raised.value.message.endswith((".", ")"))
    assert _snapshot() == before


@pytest.mark.parametrize(
    "name", ["Bad", "-x", "x-", "a" * 41, "has space", "new", "under_score", ""]
)
def test_bad_endpoint_names_are_refused(name, versions, dev_target, scientist_actor):
    before = (Endpoint.objects.count(), Release.objects.count(), AuditEvent.objects.count())
    with pytest.raises(ApplicationError):
        services.endpoint_create(
            actor=scientist_actor, name=name, target=dev_target, version="adder:1"
        )
    assert (Endpoint.objects.count(), Release.objects.count(), AuditEvent.objects.count()) == before


def test_duplicate_endpoint_name_is_refused(endpoint, dev_target, scientist_actor):
    with pytest.raises(ApplicationError, match="already exists"):
        services.endpoint_create(
            actor=scientist_actor, name="adder-api", target=dev_target, version="adder:2"
        )
    assert Endpoint.objects.count() == 1


def test_another_teams_version_is_unknown(endpoint, other_team, scientist_actor):
    from registry.models import RegisteredModel

    foreign = RegisteredModel.objects.create(team=other_team, name="foreign")
    make_version(foreign, number=1)
    before = _snapshot()
    with pytest.raises(ApplicationError, match="no model named"):
        services.endpoint_deploy(actor=scientist_actor, endpoint=endpoint, version="foreign:1")
    assert _snapshot() == before


# Who may deploy where: dev takes scientists and up, production deployers and up.
ROLE_MATRIX = [
    ("viewer", "dev", PermissionDenied),
    ("scientist", "dev", None),
    ("deployer", "dev", None),
    ("admin_member", "dev", None),
    ("viewer", "production", PermissionDenied),
    ("scientist", "production", PermissionDenied),
    ("deployer", "production", None),
    ("admin_member", "production", None),
    ("outsider", "dev", Http404),
    ("outsider", "production", Http404),
]


@pytest.mark.parametrize(("member", "environment", "refusal"), ROLE_MATRIX)
def test_role_and_environment_matrix(
    request, member, environment, refusal, versions, dev_target, production_target, make_actor
):
    target = dev_target if environment == "dev" else production_target
    actor = make_actor(request.getfixturevalue(member))
    system = make_actor(request.getfixturevalue("admin_member"))
    endpoint = services.endpoint_create(
        actor=system, name="matrix", target=target, version="adder:1"
    )
    calls = [
        lambda: services.endpoint_deploy(
            actor=actor, endpoint=endpoint, version="adder:2", weight=10),
        lambda: services.endpoint_promote(actor=actor, endpoint=endpoint),
        lambda: services.endpoint_set_traffic(
            actor=actor, endpoint=endpoint, variants=[{"version": "adder:2", "weight": 100}]),
        lambda: services.endpoint_rollback(actor=actor, endpoint=endpoint, release_number=1),
        lambda: services.endpoint_stop(actor=actor, endpoint=endpoint),
    ]  # fmt: skip
    for call in calls:
        before = _snapshot()
        if refusal is None:
            call()
            assert Release.objects.count() == before[0] + 1
        else:
            with pytest.raises(refusal):
                call()
            assert _snapshot() == before
    if refusal is None:
        assert Endpoint.objects.get().desired_release.number == 6
    new_name = f"matrix-{member.replace('_', '-')}"
    if refusal is None:
        services.endpoint_create(actor=actor, name=new_name, target=target, version="adder:1")
    else:
        with pytest.raises(refusal):
            services.endpoint_create(actor=actor, name=new_name, target=target, version="adder:1")
        assert not Endpoint.objects.filter(name=new_name).exists()


def test_production_takes_only_approved_versions(
    adder_model, versions, production_target, deployer, make_actor
):
    unapproved = make_version(adder_model, number=5, approved=False)
    actor = make_actor(deployer)
    with pytest.raises(ApplicationError, match="approved"):
        services.endpoint_create(
            actor=actor, name="prod", target=production_target, version=unapproved.reference
        )
    assert not Endpoint.objects.exists()
    endpoint = services.endpoint_create(
        actor=actor, name="prod", target=production_target, version="adder:1"
    )
    before = _snapshot()
    with pytest.raises(ApplicationError, match="approved"):
        services.endpoint_deploy(actor=actor, endpoint=endpoint, version="adder:5", weight=10)
    assert _snapshot() == before


def test_dev_takes_unapproved_versions(adder_model, dev_target, scientist_actor):
    unapproved = make_version(adder_model, number=1, approved=False)
    endpoint = services.endpoint_create(
        actor=scientist_actor, name="dev", target=dev_target, version=unapproved.reference
    )
    assert endpoint.desired_release.number == 1


class TestTargets:
    def test_admin_creates_a_target_with_one_audit_row(self, team, admin_member, make_actor):
        target = services.target_create(
            actor=make_actor(admin_member), team=team, name="edge-lab", kind="local",
            environment="staging", config={"threads": 2},
        )  # fmt: skip
        assert (target.kind, target.environment, target.config) == (
            "local",
            "staging",
            {"threads": 2},
        )
        assert AuditEvent.objects.filter(action="target.create").count() == 1

    @pytest.mark.parametrize("member", ["viewer", "scientist", "deployer"])
    def test_non_admins_cannot_create_targets(self, request, member, team, make_actor):
        with pytest.raises(PermissionDenied):
            services.target_create(
                actor=make_actor(request.getfixturevalue(member)), team=team, name="x", kind="local"
            )
        assert not Target.objects.exists()

    def test_outsider_gets_404(self, team, outsider, make_actor):
        with pytest.raises(Http404):
            services.target_create(actor=make_actor(outsider), team=team, name="x", kind="local")

    @pytest.mark.parametrize(
        ("fields", "message"),
        [
            ({"name": "Bad Name", "kind": "local"}, "Target name"),
            ({"name": "x", "kind": "mainframe"}, "Unknown kind"),
            ({"name": "x", "kind": "local", "environment": "qa"}, "Unknown environment"),
            ({"name": "x", "kind": "local", "config": {"colour": "red"}}, "Unknown local target"),
            ({"name": "x", "kind": "local", "config": {"threads": -1}}, "threads"),
        ],
    )
    def test_bad_target_input(self, fields, message, team, admin_member, make_actor):
        with pytest.raises(ApplicationError, match=message):
            services.target_create(actor=make_actor(admin_member), team=team, **fields)
        assert not Target.objects.exists()
        assert not AuditEvent.objects.exists()
