"""Aliases: reserved names, protection by role, append-only history, and time travel."""

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from accounts.actor import Actor
from common.errors import ApplicationError
from registry import selectors, services
from registry.models import Alias, AliasEvent, ModelVersion
from tests.registry import onnx_files
from tests.registry.conftest import register

pytestmark = pytest.mark.django_db


def make_ready(version: ModelVersion) -> ModelVersion:
    """Mark a version validated through the services (the checks have their own tests)."""
    system = Actor.system("tests")
    services.version_mark_validating(actor=system, version_id=version.pk)
    return services.version_record_validation(actor=system, version_id=version.pk, ok=True)


@pytest.fixture
def versions(scientist_actor, registered, onnx_path):
    """Versions 1-3 of `iris`, ready; 1 and 2 approved."""
    path = onnx_path(onnx_files.linear_regressor())
    made = [make_ready(register(scientist_actor, registered, path)) for _ in range(3)]
    return made


@pytest.fixture
def approved(versions, deployer_actor):
    for version in versions[:2]:
        services.version_approve(actor=deployer_actor, version=version, decision="approved")
    return versions


@pytest.mark.parametrize("name", ["latest", "v1", "v42"])
def test_reserved_names_are_refused(name, versions, registered, scientist_actor):
    with pytest.raises(ApplicationError) as caught:
        services.alias_set(actor=scientist_actor, model=registered, name=name, version_number=1)
    assert caught.value.message == (
        f"'{name}' is reserved: 'latest' and 'v<number>' always mean the newest ready version "
        "and version <number>."
    )
    assert not Alias.objects.exists() and not AliasEvent.objects.exists()


@pytest.mark.parametrize(
    "name", ["Champion", "../prod", "prod/x", "pr\x00d", "x" * 33, "", "%2e%2e"]
)
def test_bad_alias_names_are_refused(name, versions, registered, scientist_actor):
    with pytest.raises(ApplicationError) as caught:
        services.alias_set(actor=scientist_actor, model=registered, name=name, version_number=1)
    assert caught.value.message == (
        "Alias names have 1-32 characters: lowercase letters, digits, '_' or '-', starting with "
        "a letter."
    )


def test_scientist_sets_and_moves_unprotected_alias_with_history(
    versions, registered, scientist_actor, scientist
):
    services.alias_set(
        actor=scientist_actor,
        model=registered,
        name="candidate",
        version_number=1,
        reason="first try",
    )
    services.alias_set(
        actor=scientist_actor, model=registered, name="candidate", version_number=3, reason="better"
    )
    services.alias_set(
        actor=scientist_actor, model=registered, name="candidate", version_number=3, reason="no-op"
    )
    alias = Alias.objects.get()
    assert (alias.name, alias.version.number, alias.is_protected) == ("candidate", 3, False)
    history = [
        (
            e.alias_name,
            e.from_version and e.from_version.number,
            e.to_version.number,
            e.actor,
            e.actor_label,
            e.reason,
        )
        for e in selectors.alias_history(model=registered, name="candidate")
    ]
    assert history == [
        ("candidate", 1, 3, scientist, "sam-scientist", "better"),
        ("candidate", None, 1, scientist, "sam-scientist", "first try"),
    ]


def test_protected_alias_rules_per_role(
    approved, registered, scientist_actor, deployer_actor, admin_member, make_actor
):
    # `production` starts protected: a scientist cannot create it.
    with pytest.raises(ApplicationError) as caught:
        services.alias_set(
            actor=scientist_actor, model=registered, name="production", version_number=1
        )
    assert (caught.value.status, caught.value.message) == (
        403,
        "Alias 'production' is protected: only deployers and admins can change it.",
    )
    # A deployer can, but only onto an approved version.
    with pytest.raises(ApplicationError) as caught:
        services.alias_set(
            actor=deployer_actor, model=registered, name="production", version_number=3
        )
    assert caught.value.message == (
        "Protected alias 'production' can only point at an approved version; version 3 is pending."
    )
    services.alias_set(actor=deployer_actor, model=registered, name="production", version_number=1)
    assert Alias.objects.get(name="production").is_protected is True
    # A scientist can neither move nor delete nor unprotect it.
    for attempt in (
        lambda: services.alias_set(
            actor=scientist_actor, model=registered, name="production", version_number=2
        ),
        lambda: services.alias_set(
            actor=scientist_actor,
            model=registered,
            name="production",
            version_number=1,
            protected=False,
        ),
        lambda: services.alias_delete(actor=scientist_actor, model=registered, name="production"),
    ):
        with pytest.raises(ApplicationError) as caught:
            attempt()
        assert caught.value.status == 403
    assert Alias.objects.get(name="production").version.number == 1
    # An admin moves it; anyone may protect a new alias only if they are a deployer.
    services.alias_set(
        actor=make_actor(admin_member),
        model=registered,
        name="production",
        version_number=2,
        reason="promote",
    )
    with pytest.raises(ApplicationError):
        services.alias_set(
            actor=scientist_actor, model=registered, name="stable", version_number=1, protected=True
        )
    assert AliasEvent.objects.filter(alias_name="production").count() == 2


def test_viewer_cannot_touch_aliases(versions, registered, viewer, make_actor):
    with pytest.raises(PermissionDenied):
        services.alias_set(
            actor=make_actor(viewer), model=registered, name="candidate", version_number=1
        )
    assert not AliasEvent.objects.exists()


def test_aliases_refuse_invalid_and_archived_versions(versions, registered, scientist_actor):
    services.version_archive(actor=scientist_actor, version=versions[2])
    with pytest.raises(ApplicationError) as caught:
        services.alias_set(
            actor=scientist_actor, model=registered, name="candidate", version_number=3
        )
    assert caught.value.message == "Version 3 is archived; an alias cannot point at it."
    with pytest.raises(ApplicationError) as caught:
        services.alias_set(
            actor=scientist_actor, model=registered, name="candidate", version_number=9
        )
    assert caught.value.message == "Model 'iris' has no version 9."


def test_archiving_or_rejecting_an_aliased_version_is_refused(
    approved, registered, scientist_actor, deployer_actor
):
    services.alias_set(actor=deployer_actor, model=registered, name="production", version_number=1)
    with pytest.raises(ApplicationError) as caught:
        services.version_archive(actor=deployer_actor, version=approved[0])
    assert (
        caught.value.message == "Alias 'production' points at version 1; move or delete it first."
    )
    with pytest.raises(ApplicationError) as caught:
        services.version_approve(actor=deployer_actor, version=approved[0], decision="rejected")
    assert caught.value.message == (
        "Protected alias 'production' points at this version; move it before rejecting."
    )


def test_delete_keeps_a_history_row(versions, registered, scientist_actor):
    services.alias_set(actor=scientist_actor, model=registered, name="candidate", version_number=2)
    services.alias_delete(actor=scientist_actor, model=registered, name="candidate", reason="done")
    assert not Alias.objects.exists()
    latest = selectors.alias_history(model=registered, name="candidate").first()
    assert (latest.from_version.number, latest.to_version, latest.reason) == (2, None, "done")
    with pytest.raises(ApplicationError) as caught:
        services.alias_delete(actor=scientist_actor, model=registered, name="candidate")
    assert (caught.value.status, caught.value.message) == (
        404,
        "Model 'iris' has no alias 'candidate'.",
    )


def test_alias_version_at_answers_over_several_moves(versions, registered, scientist_actor):
    start = timezone.now()
    moments = []
    for number in (1, 2, 3, 1):
        services.alias_set(
            actor=scientist_actor, model=registered, name="candidate", version_number=number
        )
        moments.append(timezone.now())
    services.alias_delete(actor=scientist_actor, model=registered, name="candidate")
    # Spread the events out in time so "at" falls cleanly between them.
    events = list(AliasEvent.objects.order_by("id"))
    for index, event in enumerate(events):
        AliasEvent.objects.filter(pk=event.pk).update(
            created_at=start + timedelta(minutes=10 * (index + 1))
        )

    def at(minutes):
        version = selectors.alias_version_at(
            registered, "candidate", start + timedelta(minutes=minutes)
        )
        return version.number if version else None

    assert [at(5), at(10), at(15), at(25), at(35), at(45), at(55)] == [None, 1, 1, 2, 3, 1, None]
    assert selectors.alias_version_at(registered, "other", start + timedelta(days=1)) is None


def test_history_rows_are_append_only(versions, registered, scientist_actor):
    services.alias_set(actor=scientist_actor, model=registered, name="candidate", version_number=1)
    event = AliasEvent.objects.get()
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        event.save()
    with pytest.raises(ValidationError):
        event.delete()


class TestAliasApi:
    def test_put_sets_and_moves_and_get_lists(self, approved, scientist_api, deployer_api):
        response = scientist_api.put(
            "/api/v1/models/iris/aliases/candidate/", {"version": 1, "reason": "try"}, format="json"
        )
        assert response.status_code == 200
        assert {k: response.json()[k] for k in ("name", "version", "protected")} == {
            "name": "candidate",
            "version": 1,
            "protected": False,
        }
        response = deployer_api.put(
            "/api/v1/models/iris/aliases/production/", {"version": 2}, format="json"
        )
        assert (response.status_code, response.json()["protected"]) == (200, True)
        listed = scientist_api.get("/api/v1/models/iris/aliases/").json()["results"]
        assert [(a["name"], a["version"], a["protected"]) for a in listed] == [
            ("candidate", 1, False),
            ("production", 2, True),
        ]
        version = scientist_api.get("/api/v1/models/iris/versions/2/").json()
        assert version["aliases"] == ["production"]

    def test_protected_alias_refused_for_scientist_with_403(
        self, approved, scientist_api, deployer_api
    ):
        deployer_api.put("/api/v1/models/iris/aliases/production/", {"version": 1}, format="json")
        response = scientist_api.put(
            "/api/v1/models/iris/aliases/production/", {"version": 2}, format="json"
        )
        assert response.status_code == 403
        assert response.json() == {
            "error": "Alias 'production' is protected: only deployers and admins can change it.",
            "detail": {},
        }
        assert scientist_api.delete("/api/v1/models/iris/aliases/production/").status_code == 403
        assert Alias.objects.get().version.number == 1

    @pytest.mark.parametrize("alias", ["latest", "v2", "Prod", "..", "%2e%2e", "a" * 40])
    def test_bad_alias_names_answer_400(self, approved, scientist_api, alias):
        response = scientist_api.put(
            f"/api/v1/models/iris/aliases/{alias}/", {"version": 1}, format="json"
        )
        assert response.status_code in (400, 404)
        assert not AliasEvent.objects.exists()

    def test_history_with_and_without_at(self, approved, scientist_api):
        for number in (1, 2):
            scientist_api.put(
                "/api/v1/models/iris/aliases/candidate/", {"version": number}, format="json"
            )
        first, second = AliasEvent.objects.order_by("id")
        moment = timezone.now() - timedelta(hours=2)
        AliasEvent.objects.filter(pk=first.pk).update(created_at=moment)
        AliasEvent.objects.filter(pk=second.pk).update(created_at=moment + timedelta(hours=1))
        body = scientist_api.get("/api/v1/models/iris/aliases/candidate/history/").json()
        assert (body["alias"], body["at"], body["version"]) == ("candidate", None, 2)
        assert [(e["from_version"], e["to_version"], e["actor"]) for e in body["events"]] == [
            (1, 2, "sam-scientist (token test)"),
            (None, 1, "sam-scientist (token test)"),
        ]
        at = (moment + timedelta(minutes=30)).isoformat()
        body = scientist_api.get(
            "/api/v1/models/iris/aliases/candidate/history/", {"at": at}
        ).json()
        assert body["version"] == 1
        body = scientist_api.get(
            "/api/v1/models/iris/aliases/candidate/history/", {"at": "2000-01-01T00:00:00Z"}
        ).json()
        assert body["version"] is None
        response = scientist_api.get(
            "/api/v1/models/iris/aliases/candidate/history/", {"at": "yesterday"}
        )
        assert response.status_code == 400
        assert response.json()["error"] == (
            "?at= takes an ISO-8601 time, e.g. 2025-01-31T12:00:00Z."
        )
        assert scientist_api.get("/api/v1/models/iris/aliases/nothing/history/").status_code == 404

    def test_delete_answers_204(self, approved, scientist_api):
        scientist_api.put("/api/v1/models/iris/aliases/candidate/", {"version": 1}, format="json")
        response = scientist_api.delete(
            "/api/v1/models/iris/aliases/candidate/", {"reason": "cleanup"}, format="json"
        )
        assert response.status_code == 204
        assert AliasEvent.objects.order_by("-id").first().reason == "cleanup"
