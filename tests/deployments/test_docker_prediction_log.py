"""The Docker target's `prediction_log_url`: the gateway container ships its prediction log to the
dashboard (a stand-in ingest server on this host, reached as host.docker.internal), with the
endpoint's token and the caller's request id; bad URLs are refused by the target API.

The engine tests need the CI Docker tier (`.ci/docker-tier.sh`): skipped without an engine,
failed instead when MODELDECK_REQUIRE_TIERS names "docker".
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from deployments import access, services
from deployments.models import Endpoint, EndpointStatus, Target, TargetKind
from deployments.reconciler import reconcile_endpoint
from deployments.targets import driver_for
from deployments.targets.docker.driver import docker_settings
from deployments.targets.kubernetes.config import kubernetes_settings
from tests.deployments.test_docker_engine import _ours, _remove_ours, docker_engine  # noqa: F401

DEADLINE_SECONDS = 60


class Dashboard:
    """A stand-in ingest API on all interfaces, so containers reach it through the host gateway."""

    def __init__(self) -> None:
        self.posts: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers["Content-Length"])
                outer.posts.append(
                    {
                        "path": self.path,
                        "authorization": self.headers.get("Authorization", ""),
                        "body": json.loads(self.rfile.read(length)),
                    }
                )
                body = b"{}"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        # All interfaces: the gateway container comes in through the Docker bridge.
        self.server = ThreadingHTTPServer(("0.0.0.0", 0), Handler)  # noqa: S104
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def records(self) -> list[tuple[dict, dict]]:
        return [(post, record) for post in list(self.posts) for record in post["body"]["records"]]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def dashboard():
    stand_in = Dashboard()
    yield stand_in
    stand_in.stop()


@pytest.fixture
def engine(docker_engine, settings):  # noqa: F811
    settings.DEPLOYMENTS_DRAIN_SECONDS = 0.5
    settings.DEPLOYMENTS_READY_TIMEOUT_SECONDS = 60
    _remove_ours(docker_engine)
    yield docker_engine
    _remove_ours(docker_engine)


def _converge(endpoint: Endpoint) -> Endpoint:
    result = reconcile_endpoint(endpoint_id=endpoint.pk)
    endpoint.refresh_from_db()
    assert result == "converged", (result, endpoint.status_reason)
    assert endpoint.status == EndpointStatus.LIVE
    return endpoint


def _gateway_container(engine, endpoint: Endpoint):
    # Other installations (other test runs) may share the engine and the endpoint id.
    labels = [*_ours(), f"modeldeck.endpoint={endpoint.pk}", "modeldeck.role=gateway"]
    found = engine.containers.list(filters={"label": labels})
    assert len(found) == 1
    return found[0]


def _environment(container) -> dict[str, str]:
    return dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_gateway_container_ships_predictions_to_the_dashboard_on_the_host(
    engine, versions, team, system, dashboard
):
    target = Target.objects.create(
        team=team, name="docker-logged", kind=TargetKind.DOCKER,
        config={
            "threads": 1, "gateway_port_range": "19600-19699", "mem_limit": "512m",
            "prediction_log_url": f"http://host.docker.internal:{dashboard.port}",
        },
    )  # fmt: skip
    created = services.endpoint_create(
        actor=system, name="logged", target=target, version="adder:1"
    )
    # Docker endpoints require an inference key from the start.
    _key, plain = access.endpoint_key_create(actor=system, endpoint=created)
    endpoint = _converge(created)
    gateway = _gateway_container(engine, endpoint)
    ingest = f"http://host.docker.internal:{dashboard.port}/api/v1/endpoints/logged/predictions/"
    assert _environment(gateway)["MODELDECK_GATEWAY_PREDICTION_LOG_URL"] == ingest
    assert gateway.attrs["HostConfig"]["ExtraHosts"] == ["host.docker.internal:host-gateway"]

    response = httpx.post(
        f"{endpoint.url}/v2/models/logged/infer",
        json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [4.0]}]},
        headers={"X-Request-Id": "docker-log-1", "Authorization": f"Bearer {plain}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text

    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline and not dashboard.records():
        time.sleep(0.1)
    assert dashboard.records(), gateway.logs(tail=20).decode(errors="replace")
    [(post, record)] = dashboard.records()
    assert post["path"] == "/api/v1/endpoints/logged/predictions/"
    assert post["authorization"] == f"Bearer {endpoint.gateway_token}"
    assert (record["request_id"], record["version"], record["role"], record["status"]) == (
        "docker-log-1",
        "adder:1",
        "primary",
        200,
    )
    assert record["predicted_value"] == 5.0


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_host_mapping_only_for_host_docker_internal_and_no_log_without_the_setting(
    engine, versions, team, system
):
    target = Target.objects.create(
        team=team, name="docker-cluster-log", kind=TargetKind.DOCKER,
        config={
            "threads": 1, "gateway_port_range": "19600-19699", "mem_limit": "512m",
            "prediction_log_url": "http://modeldeck-web:8000/",
        },
    )  # fmt: skip
    endpoint = _converge(
        services.endpoint_create(actor=system, name="mapped", target=target, version="adder:1")
    )
    gateway = _gateway_container(engine, endpoint)
    assert _environment(gateway)["MODELDECK_GATEWAY_PREDICTION_LOG_URL"] == (
        "http://modeldeck-web:8000/api/v1/endpoints/mapped/predictions/"
    )
    assert not gateway.attrs["HostConfig"]["ExtraHosts"]

    # Without the setting, a new gateway is told nothing: the target logs no predictions.
    Target.objects.filter(pk=target.pk).update(
        config={"threads": 1, "gateway_port_range": "19600-19699", "mem_limit": "512m"}
    )
    target.refresh_from_db()
    driver = driver_for(target)
    driver.remove_gateway(gateway=driver.observe(endpoint=endpoint).gateway)
    driver.ensure_gateway(endpoint=endpoint)
    gateway = _gateway_container(engine, endpoint)
    assert "MODELDECK_GATEWAY_PREDICTION_LOG_URL" not in _environment(gateway)
    assert not gateway.attrs["HostConfig"]["ExtraHosts"]


# --- the setting through the target API --------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("kind", [TargetKind.DOCKER, TargetKind.KUBERNETES])
@pytest.mark.parametrize(
    "url",
    [
        "dashboard:8000",
        "ftp://dashboard.example.com/",
        "http://admin:secret@dashboard.example.com:8000",
        "http://dashboard.example.com:8000/?token=x",
        "http://dashboard.example.com:8000 --flag",
        "http://dashboard.example.com\n",
        "http://:8000",
        ["http://dashboard.example.com"],
    ],
)
def test_a_bad_prediction_log_url_is_a_readable_400_and_creates_no_target(
    kind, url, team, admin_member, api_for
):
    payload = {"name": "logged", "kind": kind, "config": {"prediction_log_url": url}}
    response = api_for(admin_member, team).post("/api/v1/targets/", payload, format="json")
    assert response.status_code == 400
    assert "prediction_log_url" in response.json()["error"]
    assert "http(s) URL" in response.json()["error"]
    assert response.json()["detail"] == {"config": "prediction_log_url"}
    assert not Target.objects.filter(name="logged").exists()


@pytest.mark.django_db
@pytest.mark.parametrize("kind", [TargetKind.DOCKER, TargetKind.KUBERNETES])
def test_a_good_prediction_log_url_is_kept_as_given(kind, team, admin_member, api_for):
    config = {"prediction_log_url": "https://modeldeck.example.com:8443/dashboard/"}
    if kind == TargetKind.KUBERNETES:
        config["kubeconfig_env"] = "MODELDECK_TARGET_ALPHA_KUBECONFIG"  # never implied
    payload = {"name": "logged", "kind": kind, "config": config}
    response = api_for(admin_member, team).post("/api/v1/targets/", payload, format="json")
    assert response.status_code == 201, response.json()
    target = Target.objects.get(name="logged")
    assert target.config == config
    settings = docker_settings(config) if kind == TargetKind.DOCKER else kubernetes_settings(config)
    assert settings.prediction_log_url == "https://modeldeck.example.com:8443/dashboard"
