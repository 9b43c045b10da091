"""What a team admin may point a target at is bounded by the installation: Docker engines only
from TARGET_DOCKER_HOSTS, Kubernetes credentials only when named (never the worker's own
kubeconfig by default) and in-cluster identity only with TARGET_ALLOW_IN_CLUSTER."""

import pytest

from deployments.models import Target

pytestmark = pytest.mark.django_db


def create(api, kind: str, config: dict):
    return api.post(
        "/api/v1/targets/", {"name": "new-target", "kind": kind, "config": config}, format="json"
    )


def test_a_docker_engine_the_operator_did_not_allow_is_refused(team, admin_member, api_for):
    api = api_for(admin_member, team)
    for host in ("tcp://10.0.0.5:2375", "tcp://127.0.0.1:6379", "ssh://root@internal-db"):
        response = create(api, "docker", {"docker_host": host})
        assert response.status_code == 400, host
        assert response.json()["detail"] == {"config": "docker_host"}
        assert "TARGET_DOCKER_HOSTS" in response.json()["error"]
    assert not Target.objects.filter(name="new-target").exists()


def test_an_allowed_docker_engine_and_the_workers_own_are_accepted(
    team, admin_member, api_for, settings
):
    settings.TARGET_DOCKER_HOSTS = ["tcp://gpu-box.internal:2376"]
    api = api_for(admin_member, team)
    response = create(api, "docker", {"docker_host": "tcp://gpu-box.internal:2376"})
    assert response.status_code == 201, response.json()
    Target.objects.filter(name="new-target").delete()
    assert create(api, "docker", {}).status_code == 201


def test_kubernetes_credentials_must_be_named(team, admin_member, api_for, settings):
    api = api_for(admin_member, team)
    response = create(api, "kubernetes", {"namespace": "ml"})
    assert response.status_code == 400
    assert response.json()["detail"] == {"config": "kubeconfig"}
    response = create(api, "kubernetes", {"in_cluster": True})
    assert response.status_code == 400
    assert response.json()["detail"] == {"config": "in_cluster"}
    assert not Target.objects.filter(name="new-target").exists()

    settings.TARGET_ALLOW_IN_CLUSTER = True
    assert create(api, "kubernetes", {"in_cluster": True}).status_code == 201
    Target.objects.filter(name="new-target").delete()
    named = {"kubeconfig_env": "MODELDECK_TARGET_ALPHA_KUBECONFIG"}
    assert create(api, "kubernetes", named).status_code == 201


def test_a_team_names_only_its_own_credentials(team, other_team, admin_member, api_for, settings):
    """Team "alpha" gets CREDENTIALS_DIR/alpha/ and MODELDECK_TARGET_ALPHA_*; another team's
    file or variable is refused even though it is inside the installation's folder."""
    settings.TARGET_CREDENTIALS_DIR = "/srv/modeldeck-credentials"
    api = api_for(admin_member, team)
    other = other_team.name
    refused = [
        ("kubernetes", {"kubeconfig": f"/srv/modeldeck-credentials/{other}/kubeconfig"}),
        ("kubernetes", {"kubeconfig": "/srv/modeldeck-credentials/kubeconfig"}),
        ("kubernetes", {"kubeconfig": "/srv/modeldeck-credentials/alpha/../beta/kubeconfig"}),
        ("kubernetes", {"kubeconfig_env": "MODELDECK_TARGET_KUBECONFIG"}),
        ("kubernetes", {"kubeconfig_env": f"MODELDECK_TARGET_{other.upper()}_KUBECONFIG"}),
        ("docker", {"tls_ca_cert": f"/srv/modeldeck-credentials/{other}/ca.pem"}),
        (
            "docker",
            {
                "registry": {
                    "repository": "registry.example.com/alpha/serving",
                    "username_env": "MODELDECK_TARGET_ALPHA_REGISTRY_USER",
                    "password_env": f"MODELDECK_TARGET_{other.upper()}_REGISTRY_PASSWORD",
                }
            },
        ),
    ]
    for kind, config in refused:
        response = create(api, kind, config)
        assert response.status_code == 400, (config, response.json())
        assert response.json()["detail"]["config"] in (*config, "registry")
    assert not Target.objects.filter(name="new-target").exists()
    own = {"kubeconfig": "/srv/modeldeck-credentials/alpha/prod/kubeconfig"}
    assert create(api, "kubernetes", own).status_code == 201
