"""A Kubernetes target's `build` setting is held to the same installation policy as a Docker
target: engines only from TARGET_DOCKER_HOSTS, registry credentials only as this team's
MODELDECK_TARGET_<TEAM>_* variables, TLS files only in this team's credentials folder."""

import pytest

from deployments.models import Target

pytestmark = pytest.mark.django_db

KUBECONFIG = {"kubeconfig_env": "MODELDECK_TARGET_ALPHA_KUBECONFIG"}
REPOSITORY = "registry.example.com/alpha/serving"


def create(api, build: dict):
    return api.post(
        "/api/v1/targets/",
        {"name": "cluster", "kind": "kubernetes", "config": {**KUBECONFIG, "build": build}},
        format="json",
    )


def test_a_build_engine_the_operator_did_not_allow_is_refused(team, admin_member, api_for):
    api = api_for(admin_member, team)
    response = create(
        api, {"docker_host": "tcp://10.0.0.5:2375", "registry": {"repository": REPOSITORY}}
    )
    assert response.status_code == 400
    assert response.json()["detail"] == {"config": "build"}
    assert "TARGET_DOCKER_HOSTS" in response.json()["error"]
    assert not Target.objects.exists()


def test_registry_credentials_are_this_teams_variables_only(
    team, other_team, admin_member, api_for
):
    api = api_for(admin_member, team)
    errors = []
    for username_env in ("SECRET_KEY", "MODELDECK_TARGET_BRAVO_REGISTRY_USER"):
        registry = {
            "repository": REPOSITORY,
            "username_env": username_env,
            "password_env": "MODELDECK_TARGET_ALPHA_REGISTRY_PASSWORD",
        }
        response = create(api, {"registry": registry})
        assert response.status_code == 400, username_env
        assert response.json()["detail"] == {"config": "build"}
        errors.append(response.json()["error"])
    assert errors == [
        "build: registry: username_env must name an environment variable starting with "
        "MODELDECK_TARGET_ (A-Z, 0-9 and _).",
        "Target setting build must start with MODELDECK_TARGET_ALPHA_ (this team's variables).",
    ]
    assert not Target.objects.exists()


def test_tls_files_of_the_build_engine_stay_in_this_teams_folder(
    team, admin_member, api_for, settings, tmp_path
):
    settings.TARGET_CREDENTIALS_DIR = tmp_path
    settings.TARGET_DOCKER_HOSTS = ["tcp://builder.internal:2376"]
    api = api_for(admin_member, team)
    build = {
        "docker_host": "tcp://builder.internal:2376",
        "tls_ca_cert": str(tmp_path / "bravo" / "ca.pem"),
        "registry": {"repository": REPOSITORY},
    }
    response = create(api, build)
    assert response.status_code == 400
    assert response.json()["detail"] == {"config": "build"}
    assert not Target.objects.exists()


def test_a_build_setting_within_policy_is_kept(team, admin_member, api_for, settings, tmp_path):
    settings.TARGET_CREDENTIALS_DIR = tmp_path
    settings.TARGET_DOCKER_HOSTS = ["tcp://builder.internal:2376"]
    api = api_for(admin_member, team)
    build = {
        "docker_host": "tcp://builder.internal:2376",
        "tls_ca_cert": str(tmp_path / "alpha" / "ca.pem"),
        "registry": {
            "repository": REPOSITORY,
            "username_env": "MODELDECK_TARGET_ALPHA_REGISTRY_USER",
            "password_env": "MODELDECK_TARGET_ALPHA_REGISTRY_PASSWORD",
        },
    }
    response = create(api, build)
    assert response.status_code == 201, response.content
    assert Target.objects.get(name="cluster").config["build"] == build
