"""Registered models: names, descriptions, tags, roles, search and the model API."""

import pytest
from django.core.exceptions import PermissionDenied

from accounts.models import AuditEvent
from common.errors import ApplicationError
from registry import selectors, services
from registry.models import RegisteredModel
from tests.factories import MembershipFactory

pytestmark = pytest.mark.django_db


def test_model_create_stores_the_model_and_one_audit_event(team, scientist, scientist_actor):
    model = services.model_create(
        actor=scientist_actor,
        team=team,
        name="churn.v2_final-1",
        description="Churn",
        tags={"task": "classification", "owner:team": "growth"},
    )
    row = RegisteredModel.objects.get(name="churn.v2_final-1")
    assert (row.team, row.description, row.created_by) == (team, "Churn", scientist)
    assert row.tags == {"task": "classification", "owner:team": "growth"}
    assert list(AuditEvent.objects.values_list("action", "object_id")) == [
        ("model.create", str(model.pk))
    ]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Iris", "Model names are lowercase: use 'iris'."),
        ("IRIS", "Model names are lowercase: use 'iris'."),
        (
            "irіs",
            "Model names use plain ASCII only: 'irіs' contains 'і' (U+0456 CYRILLIC SMALL "
            "LETTER BYELORUSSIAN-UKRAINIAN I) (it looks like 'irs').",
        ),
        (
            "іris",
            "Model names use plain ASCII only: 'іris' contains 'і' (U+0456 CYRILLIC SMALL "
            "LETTER BYELORUSSIAN-UKRAINIAN I) (it looks like 'ris').",
        ),
        (
            "ｉｒｉｓ",
            "Model names use plain ASCII only: 'ｉｒｉｓ' contains 'ｉ' (U+FF49 FULLWIDTH "
            "LATIN SMALL LETTER I) (it looks like 'iris').",
        ),
        ("ir%69s", "Model names cannot contain '%': send 'ir%69s' decoded."),
        ("..%2f..%2fetc", "Model names cannot contain '%': send '..%2f..%2fetc' decoded."),
        (
            "../../etc/passwd",
            "Use 1-63 characters: lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit.",
        ),
        (
            "/etc/passwd",
            "Use 1-63 characters: lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit.",
        ),
        (
            "..\\..\\x",
            "Use 1-63 characters: lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit.",
        ),
        (
            "iris\x00",
            "Use 1-63 characters: lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit.",
        ),
        (
            "iris\n",
            "Use 1-63 characters: lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit.",
        ),
        (
            "-iris",
            "Use 1-63 characters: lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit.",
        ),
        ("", "A model needs a name."),
        ("a" * 64, "A model name has at most 63 characters; this one has 64."),
        ("a" * 1_000_000, "A model name has at most 63 characters; this one has 1,000,000."),
    ],
)
def test_model_create_refuses_bad_names_readably(team, scientist_actor, name, message):
    with pytest.raises(ApplicationError) as caught:
        services.model_create(actor=scientist_actor, team=team, name=name)
    assert caught.value.message == message
    assert caught.value.extra == {"name": [message]}
    assert not RegisteredModel.objects.exists()
    assert not AuditEvent.objects.exists()


def test_names_are_global_across_teams(team, other_team, scientist_actor, outsider, make_actor):
    services.model_create(actor=scientist_actor, team=team, name="iris")
    with pytest.raises(ApplicationError) as caught:
        services.model_create(actor=make_actor(outsider), team=other_team, name="iris")
    assert caught.value.status == 409
    assert caught.value.message == "A model named 'iris' already exists (names are global)."
    assert RegisteredModel.objects.count() == 1


def test_a_case_only_twin_cannot_exist_even_around_the_services(team):
    RegisteredModel.objects.create(team=team, name="iris")
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError), transaction.atomic():
        RegisteredModel.objects.create(team=team, name="IRIS")


def test_tags_rules(team, scientist_actor):
    cases = [
        ({f"k{i}": "v" for i in range(10_000)}, "A model has at most 50 tags; got 10,000."),
        ({f"k{i}": "v" for i in range(51)}, "A model has at most 50 tags; got 51."),
        (
            {"Bad Key": "v"},
            "Tag key 'Bad Key': use 1-64 characters among lowercase letters, "
            "digits, '_', '.', ':' and '-'.",
        ),
        (
            {"k" * 65: "v"},
            f"Tag key {'k' * 60 + '…'!r}: use 1-64 characters among lowercase "
            "letters, digits, '_', '.', ':' and '-'.",
        ),
        (
            {"task": "x" * 257},
            "Tag 'task': the value has at most 256 characters and no control characters.",
        ),
        ({"task": 3}, "Tag 'task': the value must be a string."),
        (["task"], "Tags must be an object of string keys and string values."),
    ]
    for tags, message in cases:
        with pytest.raises(ApplicationError) as caught:
            services.model_create(actor=scientist_actor, team=team, name="iris", tags=tags)
        assert caught.value.message == message
    model = services.model_create(
        actor=scientist_actor,
        team=team,
        name="iris",
        tags={f"k{i}": "v" * 256 for i in range(50)},
    )
    assert len(model.tags) == 50


def test_description_is_bounded(team, scientist_actor):
    with pytest.raises(ApplicationError) as caught:
        services.model_create(
            actor=scientist_actor, team=team, name="iris", description="x" * 10_001
        )
    assert caught.value.message == "A description has at most 10,000 characters."
    model = services.model_create(
        actor=scientist_actor, team=team, name="iris", description="x" * 10_000
    )
    assert len(model.description) == 10_000


def test_viewer_cannot_create_and_outsider_sees_nothing(team, viewer, outsider, make_actor):
    with pytest.raises(PermissionDenied):
        services.model_create(actor=make_actor(viewer), team=team, name="iris")
    from django.http import Http404

    with pytest.raises(Http404):
        services.model_create(actor=make_actor(outsider), team=team, name="iris")
    assert not RegisteredModel.objects.exists()


def test_model_update_and_archive(registered, scientist_actor, deployer_actor):
    services.model_update(
        actor=scientist_actor, model=registered, description="New", tags={"task": "ranking"}
    )
    registered.refresh_from_db()
    assert (registered.description, registered.tags) == ("New", {"task": "ranking"})
    with pytest.raises(PermissionDenied):
        services.model_archive(actor=scientist_actor, model=registered)
    services.model_archive(actor=deployer_actor, model=registered)
    services.model_archive(actor=deployer_actor, model=registered)
    assert RegisteredModel.objects.get().is_archived
    assert AuditEvent.objects.filter(action="model.archive").count() == 1


def test_search_and_tag_filter(team, scientist_actor, make_actor, scientist):
    services.model_create(
        actor=scientist_actor,
        team=team,
        name="churn",
        description="Who leaves",
        tags={"task": "classification", "team.owner": "growth"},
    )
    services.model_create(
        actor=scientist_actor,
        team=team,
        name="prices",
        description="Houses",
        tags={"task": "regression"},
    )
    services.model_create(
        actor=scientist_actor, team=team, name="churn-old", tags={"task": "classification"}
    )

    def names(**filters):
        models = selectors.model_list_for_actor(actor=make_actor(scientist), **filters)
        return sorted(models.values_list("name", flat=True))

    assert names(q="churn") == ["churn", "churn-old"]
    assert names(q="HOUSES") == ["prices"]
    assert names(tag="task=classification") == ["churn", "churn-old"]
    assert names(tag="team.owner") == ["churn"]
    assert names(tag="team.owner=growth", q="leaves") == ["churn"]
    assert names(tag="task=nothing") == []
    assert names(tag="x'); DROP TABLE x; --=1") == []


class TestModelApi:
    def test_create_answers_201_with_the_model(self, scientist_api):
        response = scientist_api.post(
            "/api/v1/models/",
            {"name": "iris", "description": "Flowers", "tags": {"a": "b"}},
            format="json",
        )
        assert response.status_code == 201
        body = response.json()
        assert {
            key: body[key]
            for key in ("name", "team", "description", "tags", "latest_version", "archived")
        } == {
            "name": "iris",
            "team": "alpha",
            "description": "Flowers",
            "tags": {"a": "b"},
            "latest_version": None,
            "archived": False,
        }

    def test_create_refuses_a_case_twin_and_cyrillic_look_alike(self, scientist_api):
        assert (
            scientist_api.post("/api/v1/models/", {"name": "iris"}, format="json").status_code
            == 201
        )
        twin = scientist_api.post("/api/v1/models/", {"name": "IRIS"}, format="json")
        assert twin.status_code == 400
        assert twin.json() == {
            "error": "Model names are lowercase: use 'iris'.",
            "detail": {"name": ["Model names are lowercase: use 'iris'."]},
        }
        look_alike = scientist_api.post("/api/v1/models/", {"name": "irіs"}, format="json")
        assert look_alike.status_code == 400
        assert look_alike.json()["error"].startswith("Model names use plain ASCII only")
        again = scientist_api.post("/api/v1/models/", {"name": "iris"}, format="json")
        assert again.status_code == 409
        assert RegisteredModel.objects.count() == 1

    def test_one_megabyte_name_and_ten_thousand_tags_are_refused(self, scientist_api):
        response = scientist_api.post("/api/v1/models/", {"name": "a" * 1_000_000}, format="json")
        assert response.status_code == 400
        assert response.json()["error"] == (
            "A model name has at most 63 characters; this one has 1,000,000."
        )
        tags = {f"k{i}": "v" for i in range(10_000)}
        response = scientist_api.post(
            "/api/v1/models/", {"name": "iris", "tags": tags}, format="json"
        )
        assert response.status_code == 400
        assert response.json()["error"] == "A model has at most 50 tags; got 10,000."
        assert not RegisteredModel.objects.exists()

    def test_session_user_in_several_teams_names_the_team(self, client, scientist, other_team):
        MembershipFactory(user=scientist, team=other_team, role="scientist")
        client.force_login(scientist)
        response = client.post("/api/v1/models/", {"name": "iris"}, content_type="application/json")
        assert response.status_code == 400
        assert response.json() == {
            "error": "You are in several teams: say which one owns the model.",
            "detail": {"team": ["One of: alpha, bravo."]},
        }
        response = client.post(
            "/api/v1/models/", {"name": "iris", "team": "bravo"}, content_type="application/json"
        )
        assert response.status_code == 201
        assert RegisteredModel.objects.get().team == other_team

    def test_token_team_decides(self, scientist_api, scientist, other_team):
        MembershipFactory(user=scientist, team=other_team, role="admin")
        response = scientist_api.post(
            "/api/v1/models/", {"name": "iris", "team": "bravo"}, format="json"
        )
        assert response.status_code == 400
        assert response.json()["error"] == "This token belongs to team 'alpha'."

    def test_list_search_tag_and_pagination(self, scientist_api, team, scientist_actor):
        for index in range(3):
            services.model_create(
                actor=scientist_actor,
                team=team,
                name=f"m{index}",
                tags={"stage": "prod" if index else "dev"},
            )
        body = scientist_api.get("/api/v1/models/?tag=stage%3Dprod").json()
        assert [item["name"] for item in body["results"]] == ["m1", "m2"]
        body = scientist_api.get("/api/v1/models/?q=m0").json()
        assert [item["name"] for item in body["results"]] == ["m0"]
        body = scientist_api.get("/api/v1/models/?page_size=2").json()
        assert (body["count"], len(body["results"])) == (3, 2)

    def test_patch_and_delete_archives(self, scientist_api, deployer_api, registered):
        response = scientist_api.patch(
            "/api/v1/models/iris/", {"description": "New"}, format="json"
        )
        assert (response.status_code, response.json()["description"]) == (200, "New")
        assert scientist_api.delete("/api/v1/models/iris/").status_code == 403
        assert deployer_api.delete("/api/v1/models/iris/").status_code == 204
        assert scientist_api.get("/api/v1/models/iris/").json()["archived"] is True
        assert scientist_api.get("/api/v1/models/").json()["results"] == []
        archived = scientist_api.get("/api/v1/models/?archived=true").json()["results"]
        assert [item["name"] for item in archived] == ["iris"]

    def test_put_is_not_offered(self, scientist_api, registered):
        assert scientist_api.put("/api/v1/models/iris/", {}, format="json").status_code == 405
