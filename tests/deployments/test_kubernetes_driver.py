"""The Kubernetes driver end to end: the real `kubernetes` client against a fake API server on
127.0.0.1 (tests/deployments/k8s_fake_api.py), driven by the real reconciler and services.

Serving images go through the real build path (deployments/targets/docker/images.py: context,
Build rows, push, digest); only the Docker engine is replaced here, by a recorder that answers
like one. The real engine and registry are in test_kubernetes_registry.py (the Docker tier)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
import yaml
from django.utils import timezone

from common.errors import ApplicationError
from deployments import services
from deployments.models import (
    Build,
    BuildStatus,
    Endpoint,
    EndpointStatus,
    Environment,
    Target,
    TargetKind,
)
from deployments.reconciler import reconcile_endpoint, sweep_target
from deployments.targets import driver_for
from deployments.targets.base import (
    DriverError,
    ResourceRole,
    Route,
    ServerSpec,
    StaleGeneration,
    installation_id,
)
from deployments.targets.docker import images
from deployments.targets.kubernetes.driver import KubernetesDriver
from deployments.targets.kubernetes.export import export_manifests, release_objects
from deployments.targets.kubernetes.manifests import (
    EndpointIdentity,
    ServingVersion,
    gateway_deployment,
    routes_config_map,
    routes_document,
    server_manifests,
)
from deployments.targets.kubernetes.validation import validate_manifest
from tests.deployments.k8s_fake_api import APPLY_CONTENT_TYPE, TOKEN, FakeKubernetes

pytestmark = pytest.mark.django_db

NAMESPACE = "models"
REPOSITORY = "registry.example.com/modeldeck/serving"
APPLY_QUERY = {"fieldManager": "modeldeck", "force": "true"}


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def cluster():
    fake = FakeKubernetes()
    yield fake
    fake.stop()


@pytest.fixture
def kubeconfig(cluster, tmp_path, settings):
    # Targets may only name files in TARGET_CREDENTIALS_DIR (common/credentials.py).
    settings.TARGET_CREDENTIALS_DIR = tmp_path
    return cluster.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture(autouse=True)
def _fast_reconciles(settings):
    settings.DEPLOYMENTS_DRAIN_SECONDS = 0
    settings.DEPLOYMENTS_READY_TIMEOUT_SECONDS = 5


def _config(kubeconfig, **extra) -> dict:
    return {
        "kubeconfig": str(kubeconfig),
        "context": "fake",
        "namespace": NAMESPACE,
        "switch_timeout_seconds": 1,
        "build": {"registry": {"repository": REPOSITORY}},
        **extra,
    }


GATEWAY_API = {
    "traffic": "gateway-api",
    "gateway_api": {"parent": {"name": "public", "namespace": "gateways"}},
}


@pytest.fixture
def target(team, kubeconfig):
    return Target.objects.create(
        team=team,
        name="cluster",
        kind=TargetKind.KUBERNETES,
        environment=Environment.DEV,
        config=_config(kubeconfig),
    )


def _digest(version) -> str:
    return "sha256:" + hashlib.sha256(version.reference.encode()).hexdigest()


class FakeEngine:
    """Answers the build, tag and push calls of a Docker engine; the pushed digest of a version
    is the sha256 of its reference (what `_digest` expects)."""

    def __init__(self) -> None:
        self.built: list[dict] = []
        self.pushed: list[tuple[str, str]] = []
        self.tags: dict[str, str] = {}
        self.fail_with = ""

    def build(self, **arguments):
        arguments["fileobj"].read()
        self.built.append(arguments["labels"])
        if self.fail_with:
            yield {"error": self.fail_with, "errorDetail": {"message": self.fail_with}}
            return
        reference = f"{arguments['labels']['modeldeck.model']}:"
        reference += arguments["labels"]["modeldeck.model-version"]
        yield {"stream": "Step 1/1 : FROM base\n"}
        yield {
            "aux": {"ID": "sha256:" + hashlib.sha256(b"image " + reference.encode()).hexdigest()}
        }
        self.tags[arguments["tag"]] = reference

    def inspect_image(self, reference):
        return {"Id": reference}

    def tag(self, image, repository, tag):
        self.tags[f"{repository}:{tag}"] = next(r for t, r in self.tags.items() if t.endswith(tag))

    def push(self, repository, **arguments):
        reference = self.tags[f"{repository}:{arguments['tag']}"]
        self.pushed.append((repository, reference))
        digest = "sha256:" + hashlib.sha256(reference.encode()).hexdigest()
        yield {"status": "Pushed", "id": "0123abcd"}
        yield {"status": f"{arguments['tag']}: digest: {digest} size: 1234"}


@pytest.fixture
def engine(tmp_path, settings, monkeypatch):
    """The fake engine, and a wheelhouse laid out like prepare_wheelhouse.py's."""
    wheelhouse = tmp_path / "wheelhouse"
    (wheelhouse / "deps").mkdir(parents=True)
    (wheelhouse / "runtime").mkdir()
    (wheelhouse / "deps" / "numpy-2.0-py3-none-any.whl").write_bytes(b"wheel")
    (wheelhouse / "runtime" / "modeldeck_runtime-0.1.0-py3-none-any.whl").write_bytes(b"wheel")
    settings.MODELDECK_WHEELHOUSE = str(wheelhouse)
    fake = FakeEngine()
    monkeypatch.setattr(images, "docker_client", lambda config: SimpleNamespace(api=fake))
    return fake


def _no_engine(config):
    raise AssertionError("no Docker engine should be asked")


@pytest.fixture
def builds(versions, target, engine):
    """Nothing up front: the first reconcile that needs an image builds and pushes it."""
    return engine


@pytest.fixture
def actor(deployer, make_actor):
    return make_actor(deployer)


@pytest.fixture
def endpoint(builds, target, actor):
    return services.endpoint_create(actor=actor, name="fraud", target=target, version="adder:1")


def _reload(endpoint) -> Endpoint:
    return Endpoint.objects.select_related("target", "desired_release", "live_release").get(
        pk=endpoint.pk
    )


def _route_table(cluster) -> dict:
    return json.loads(cluster.get("ConfigMap", "md-fraud-routes", NAMESPACE)["data"]["routes.json"])


def _weights(cluster) -> list[tuple[str, int, str]]:
    return [(r["version"], r["weight"], r["role"]) for r in _route_table(cluster)["routes"]]


def _names(cluster, kind) -> list[str]:
    return cluster.names(kind, NAMESPACE)


def _label(cluster, kind, name, key) -> str:
    return cluster.get(kind, name, NAMESPACE)["metadata"]["labels"][key]


def _identity(endpoint) -> EndpointIdentity:
    return EndpointIdentity(endpoint.pk, endpoint.name, endpoint.target_id, installation_id())


def _serving(version) -> ServingVersion:
    return ServingVersion(
        version_id=version.pk,
        reference=version.reference,
        model_name="adder",
        number=version.number,
        sha256=version.model_artifact.sha256,
        image=f"{REPOSITORY}@{_digest(version)}",
    )


def _owner_selector(endpoint, **extra) -> str:
    labels = {
        "app.kubernetes.io/managed-by": "modeldeck",
        "modeldeck.io/installation": installation_id(),
        "modeldeck.io/target": str(endpoint.target_id),
        "modeldeck.io/endpoint-id": str(endpoint.pk),
        **extra,
    }
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def _spec(endpoint, version, *, role="primary", release_number=1, replicas=2) -> ServerSpec:
    return ServerSpec(
        endpoint_id=endpoint.pk,
        endpoint_name=endpoint.name,
        version_id=version.pk,
        version=version.reference,
        model_name="adder",
        version_number=version.number,
        release_number=release_number,
        role=role,
        replicas=replicas,
    )


def _assert_applies(requests) -> None:
    for request in requests:
        if request.method == "PATCH":
            assert request.content_type == APPLY_CONTENT_TYPE
            assert request.query == APPLY_QUERY
        assert request.authorization == f"Bearer {TOKEN}"


# --- the driver's requests --------------------------------------------------------------------


class TestRequests:
    def test_each_operation_sends_exactly_these_requests(self, cluster, endpoint, versions):
        endpoint = _reload(endpoint)
        driver = driver_for(endpoint.target)
        assert isinstance(driver, KubernetesDriver)
        v1 = versions[1]
        base = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
        core = f"/api/v1/namespaces/{NAMESPACE}"
        cluster.take_requests()

        server = driver.ensure_server(endpoint=endpoint, spec=_spec(endpoint, v1))
        requests = cluster.take_requests()
        hpa = f"/apis/autoscaling/v2/namespaces/{NAMESPACE}/horizontalpodautoscalers"
        pdb = f"/apis/policy/v1/namespaces/{NAMESPACE}/poddisruptionbudgets"
        assert [(r.method, r.path) for r in requests] == [
            ("PATCH", f"{core}/services/md-fraud-v{v1.pk}"),
            ("PATCH", f"{base}/md-fraud-v{v1.pk}"),
            # Two fixed replicas: a disruption budget, and no autoscaler left over.
            ("PATCH", f"{pdb}/md-fraud-v{v1.pk}"),
            ("DELETE", f"{hpa}/md-fraud-v{v1.pk}"),
        ]
        _assert_applies(requests)
        expected = server_manifests(
            endpoint=_identity(endpoint),
            version=_serving(v1),
            role="primary",
            release_number=1,
            replicas=2,
            settings=driver.settings,
        )
        assert [r.body for r in requests[:2]] == expected
        assert requests[2].body["kind"] == "PodDisruptionBudget"
        # The image was built and pushed on the way, once.
        (build,) = Build.objects.filter(version=v1)
        assert (build.status, build.repository) == (BuildStatus.SUCCEEDED, REPOSITORY)
        assert build.digest == _digest(v1)
        assert server.ready and server.alive
        assert server.upstream == f"http://md-fraud-v{v1.pk}.{NAMESPACE}.svc:8080"
        assert server.handle == f"md-fraud-v{v1.pk}"

        gateway = driver.ensure_gateway(endpoint=endpoint)
        requests = cluster.take_requests()
        assert [(r.method, r.path) for r in requests] == [
            ("PATCH", f"{core}/secrets/md-fraud-gateway-token"),
            ("GET", f"{core}/configmaps/md-fraud-routes"),
            ("PATCH", f"{core}/configmaps/md-fraud-routes"),
            ("PATCH", f"{core}/services/md-fraud-gateway"),
            ("PATCH", f"{base}/md-fraud-gateway"),
        ]
        _assert_applies(requests)
        assert json.loads(requests[2].body["data"]["routes.json"]) == {
            "generation": 0, "sticky": None, "routes": []
        }  # fmt: skip
        assert gateway.ready and gateway.generation == 0
        assert gateway.url == f"http://md-fraud-gateway.{NAMESPACE}.svc:8000"

        route = Route("adder:1", v1.pk, server.upstream, 100, "primary")
        driver.set_routes(endpoint=endpoint, gateway=gateway, routes=[route], generation=1)
        requests = cluster.take_requests()
        assert [(r.method, r.path) for r in requests] == [
            ("GET", f"{core}/configmaps/md-fraud-routes"),
            ("PATCH", f"{core}/configmaps/md-fraud-routes"),
            ("PATCH", f"{base}/md-fraud-gateway"),
            ("GET", f"{base}/md-fraud-gateway"),
        ]
        _assert_applies(requests)
        table = routes_config_map(
            endpoint=_identity(endpoint),
            release_number=1,
            document={
                **routes_document(routes=[route], generation=1, sticky=None),
                # Kubernetes endpoints require an inference key from the start.
                "access": {"require_key": True, "keys": []},
            },
            settings=driver.settings,
        )
        stored_version = requests[1].body["metadata"].pop("resourceVersion")
        assert stored_version.isdigit()  # the compare-and-set precondition
        assert requests[1].body == table
        assert requests[2].body == gateway_deployment(
            endpoint=_identity(endpoint),
            release_number=1,
            image=f"{REPOSITORY}@{_digest(v1)}",
            config_map=table,
            settings=driver.settings,
        )

        driver.remove_server(server=server)
        requests = cluster.take_requests()
        selector = _owner_selector(
            endpoint, **{"app.kubernetes.io/component": "server", "modeldeck.io/version": v1.pk}
        )
        by_label = {"labelSelector": selector, "propagationPolicy": "Background"}
        assert [(r.method, r.path, r.query) for r in requests] == [
            ("DELETE", base, by_label),
            ("GET", f"{core}/services", {"labelSelector": selector}),
            ("DELETE", f"{core}/services/md-fraud-v{v1.pk}", {"propagationPolicy": "Background"}),
            ("DELETE", hpa, by_label),
            ("DELETE", pdb, by_label),
        ]
        _assert_applies(requests)
        assert _names(cluster, "Deployment") == ["md-fraud-gateway"]
        assert _names(cluster, "Service") == ["md-fraud-gateway"]

    def test_every_object_applied_validates_against_the_kubernetes_schemas(
        self, cluster, endpoint, actor
    ):
        assert reconcile_endpoint(endpoint_id=endpoint.pk) == "converged"
        services.endpoint_deploy(
            actor=actor, endpoint=_reload(endpoint), version="adder:2", weight=30
        )
        assert reconcile_endpoint(endpoint_id=endpoint.pk) == "converged"
        applied = [r.body for r in cluster.requests if r.method == "PATCH"]
        assert len(applied) == 15
        for body in applied:
            body = {**body, "metadata": {**body["metadata"]}}
            body["metadata"].pop("resourceVersion", None)
            validate_manifest(body)


# --- releases through the real reconciler -----------------------------------------------------


class TestReleases:
    def test_two_weighted_versions_promotion_and_rollback(self, cluster, endpoint, versions, actor):
        v1, v2 = versions[1], versions[2]
        assert reconcile_endpoint(endpoint_id=endpoint.pk) == "converged"
        endpoint = _reload(endpoint)
        assert endpoint.status == EndpointStatus.LIVE
        assert endpoint.url == f"http://md-fraud-gateway.{NAMESPACE}.svc:8000"
        assert _names(cluster, "Deployment") == ["md-fraud-gateway", f"md-fraud-v{v1.pk}"]
        assert _names(cluster, "Service") == ["md-fraud-gateway", f"md-fraud-v{v1.pk}"]
        assert _names(cluster, "ConfigMap") == ["md-fraud-routes"]
        assert _names(cluster, "Secret") == ["md-fraud-gateway-token"]
        assert _weights(cluster) == [("adder:1", 100, "primary")]
        assert reconcile_endpoint(endpoint_id=endpoint.pk) == "unchanged"

        # Release 2: two weighted versions.
        services.endpoint_deploy(actor=actor, endpoint=endpoint, version="adder:2", weight=20)
        assert reconcile_endpoint(endpoint_id=endpoint.pk) == "converged"
        assert _names(cluster, "Deployment") == [
            "md-fraud-gateway", f"md-fraud-v{v1.pk}", f"md-fraud-v{v2.pk}"
        ]  # fmt: skip
        assert _weights(cluster) == [("adder:1", 80, "primary"), ("adder:2", 20, "candidate")]
        table = _route_table(cluster)
        assert table["generation"] == 2
        assert table["routes"][1]["upstream"] == f"http://md-fraud-v{v2.pk}.{NAMESPACE}.svc:8080"
        gateway = cluster.get("Deployment", "md-fraud-gateway", NAMESPACE)
        annotations = gateway["spec"]["template"]["metadata"]["annotations"]
        assert annotations["modeldeck.io/routes-generation"] == "2"
        assert (
            _label(cluster, "Deployment", f"md-fraud-v{v2.pk}", "modeldeck.io/role") == "candidate"
        )
        assert _label(cluster, "Deployment", f"md-fraud-v{v1.pk}", "modeldeck.io/release") == "1"

        # Release 3: promotion; adder:1 is deleted by label once the gateway switched.
        cluster.take_requests()
        services.endpoint_promote(actor=actor, endpoint=_reload(endpoint))
        assert reconcile_endpoint(endpoint_id=endpoint.pk) == "converged"
        assert _weights(cluster) == [("adder:2", 100, "primary")]
        assert _names(cluster, "Deployment") == ["md-fraud-gateway", f"md-fraud-v{v2.pk}"]
        assert _names(cluster, "Service") == ["md-fraud-gateway", f"md-fraud-v{v2.pk}"]
        requests = [
            (r.method, r.path, r.query.get("labelSelector")) for r in cluster.take_requests()
        ]
        switch = requests.index(
            ("PATCH", f"/api/v1/namespaces/{NAMESPACE}/configmaps/md-fraud-routes", None)
        )
        removal = requests.index(
            (
                "DELETE",
                f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments",
                _owner_selector(
                    endpoint,
                    **{"app.kubernetes.io/component": "server", "modeldeck.io/version": v1.pk},
                ),
            )
        )
        assert switch < removal
        assert _reload(endpoint).status == EndpointStatus.LIVE

        # Release 4: rollback restores release 2's split; adder:1 comes back as a new server.
        rollback = services.endpoint_rollback(actor=actor, endpoint=_reload(endpoint))
        assert rollback.restores.number == 2
        assert reconcile_endpoint(endpoint_id=endpoint.pk) == "converged"
        assert _weights(cluster) == [("adder:1", 80, "primary"), ("adder:2", 20, "candidate")]
        assert _route_table(cluster)["generation"] == 4
        assert _names(cluster, "Deployment") == [
            "md-fraud-gateway", f"md-fraud-v{v1.pk}", f"md-fraud-v{v2.pk}"
        ]  # fmt: skip
        assert _label(cluster, "Deployment", f"md-fraud-v{v1.pk}", "modeldeck.io/release") == "4"
        # The kept server was not touched: it still carries the labels it was started with.
        assert _label(cluster, "Deployment", f"md-fraud-v{v2.pk}", "modeldeck.io/release") == "2"
        assert _reload(endpoint).live_release.number == 4

    def test_gateway_api_releases_set_http_route_weights(
        self, cluster, target, endpoint, versions, actor, kubeconfig
    ):
        Target.objects.filter(pk=target.pk).update(config=_config(kubeconfig, **GATEWAY_API))
        v1, v2 = versions[1], versions[2]
        assert reconcile_endpoint(endpoint_id=endpoint.pk) == "converged"
        assert _names(cluster, "Deployment") == [f"md-fraud-v{v1.pk}"]
        assert _names(cluster, "ConfigMap") == _names(cluster, "Secret") == []

        def split():
            route = cluster.get("HTTPRoute", "md-fraud", NAMESPACE)
            rule = route["spec"]["rules"][0]
            weights = [(ref["name"], ref["weight"]) for ref in rule["backendRefs"]]
            return route["metadata"]["annotations"]["modeldeck.io/generation"], weights

        assert split() == ("1", [(f"md-fraud-v{v1.pk}", 100)])
        services.endpoint_deploy(
            actor=actor, endpoint=_reload(endpoint), version="adder:2", weight=25
        )
        assert reconcile_endpoint(endpoint_id=endpoint.pk) == "converged"
        assert split() == ("2", [(f"md-fraud-v{v1.pk}", 75), (f"md-fraud-v{v2.pk}", 25)])
        services.endpoint_promote(actor=actor, endpoint=_reload(endpoint))
        assert reconcile_endpoint(endpoint_id=endpoint.pk) == "converged"
        assert split() == ("3", [(f"md-fraud-v{v2.pk}", 100)])
        assert _names(cluster, "Deployment") == [f"md-fraud-v{v2.pk}"]
        services.endpoint_rollback(actor=actor, endpoint=_reload(endpoint))
        assert reconcile_endpoint(endpoint_id=endpoint.pk) == "converged"
        assert split() == ("4", [(f"md-fraud-v{v1.pk}", 75), (f"md-fraud-v{v2.pk}", 25)])
        # The stored route, server fields and the (fake) Gateway's status included, is valid.
        validate_manifest(cluster.get("HTTPRoute", "md-fraud", NAMESPACE))

    def test_stop_removes_every_object(self, cluster, endpoint, actor):
        assert reconcile_endpoint(endpoint_id=endpoint.pk) == "converged"
        services.endpoint_stop(actor=actor, endpoint=_reload(endpoint))
        assert reconcile_endpoint(endpoint_id=endpoint.pk) == "stopped"
        kinds = ("Deployment", "Service", "ConfigMap", "Secret")
        assert [_names(cluster, kind) for kind in kinds] == [[], [], [], []]
        assert _reload(endpoint).status == EndpointStatus.STOPPED

    def test_a_failed_image_build_fails_the_deploy_with_a_readable_reason(
        self, cluster, endpoint, engine
    ):
        engine.fail_with = "no space left on device"
        assert reconcile_endpoint(endpoint_id=endpoint.pk) == "failed"
        endpoint = _reload(endpoint)
        assert endpoint.status == EndpointStatus.FAILED
        (build,) = Build.objects.all()
        assert build.status == BuildStatus.FAILED
        assert endpoint.status_reason.endswith(
            f"The image build {build.pk} of adder:1 failed: The engine failed the build: "
            "no space left on device"
        )
        assert _names(cluster, "Deployment") == []

    def test_a_target_without_a_build_setting_says_how_to_add_one(
        self, cluster, endpoint, target, kubeconfig
    ):
        config = _config(kubeconfig)
        del config["build"]
        Target.objects.filter(pk=target.pk).update(config=config)
        assert reconcile_endpoint(endpoint_id=endpoint.pk) == "failed"
        assert "Kubernetes target cluster has no build setting" in _reload(endpoint).status_reason
        assert Build.objects.count() == 0


# --- per-version scale ------------------------------------------------------------------------


class TestScale:
    def test_autoscaled_versions_get_an_autoscaler_and_report_ready_of_desired(
        self, cluster, endpoint, versions
    ):
        endpoint = _reload(endpoint)
        driver = driver_for(endpoint.target)
        name = f"md-fraud-v{versions[1].pk}"
        autoscale = {"min": 2, "max": 5, "target_cpu_percent": 60}
        spec = _spec(endpoint, versions[1], replicas=2)
        scaled = ServerSpec(**{**spec.__dict__, "autoscale": autoscale})
        state = driver.ensure_server(endpoint=endpoint, spec=scaled)
        hpa = cluster.get("HorizontalPodAutoscaler", name, NAMESPACE)
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
        assert hpa["spec"]["scaleTargetRef"]["name"] == name
        assert cluster.get("PodDisruptionBudget", name, NAMESPACE)["spec"]["maxUnavailable"] == 1
        # A new Deployment starts at Kubernetes' default; the autoscaler raises it.
        assert (state.ready_replicas, state.desired_replicas) == (1, 1)
        cluster.auto_rollout = False
        cluster.scale_deployment(name, 4, NAMESPACE)
        cluster.set_deployment_status(
            name, NAMESPACE, observedGeneration=2, replicas=4, updatedReplicas=4,
            readyReplicas=3, availableReplicas=3,
        )  # fmt: skip
        (observed,) = driver.observe(endpoint=endpoint).servers
        assert (observed.ready, observed.ready_replicas, observed.desired_replicas) == (
            False, 3, 4
        )  # fmt: skip
        assert observed.detail == "3 of 4 replicas ready"
        # Applying again keeps the autoscaler's count (the manifest leaves it out).
        driver.ensure_server(endpoint=endpoint, spec=scaled)
        assert cluster.get("Deployment", name, NAMESPACE)["spec"]["replicas"] == 4
        cluster.finish_rollout(name, NAMESPACE)
        (observed,) = driver.observe(endpoint=endpoint).servers
        assert (observed.ready, observed.ready_replicas, observed.desired_replicas) == (
            True, 4, 4
        )  # fmt: skip

        # Back to one fixed pod: the autoscaler and the budget go.
        single = driver.ensure_server(
            endpoint=endpoint, spec=_spec(endpoint, versions[1], replicas=1)
        )
        assert cluster.get("Deployment", name, NAMESPACE)["spec"]["replicas"] == 1
        assert _names(cluster, "HorizontalPodAutoscaler") == []
        assert _names(cluster, "PodDisruptionBudget") == []
        assert single.desired_replicas == 1

    def test_the_export_renders_each_versions_scale(self, cluster, endpoint, versions, actor):
        assert reconcile_endpoint(endpoint_id=endpoint.pk) == "converged"
        release = _reload(endpoint).desired_release
        variants = [
            {**release.variants[0], "autoscale": {"min": 2, "max": 8, "target_cpu_percent": 75}}
        ]
        type(release).objects.filter(pk=release.pk).update(variants=variants)
        release.refresh_from_db()
        documents = [d for d in yaml.safe_load_all(export_manifests(release)) if d]
        kinds = {(d["kind"], d["metadata"]["name"]) for d in documents}
        name = f"md-fraud-v{versions[1].pk}"
        assert {("HorizontalPodAutoscaler", name), ("PodDisruptionBudget", name)} <= kinds
        for document in documents:
            validate_manifest(document)


# --- one image per version and registry -------------------------------------------------------


class TestImages:
    def test_a_version_is_built_once_per_registry_and_reused_by_other_targets(
        self, cluster, endpoint, versions, actor, kubeconfig, team, engine, monkeypatch
    ):
        assert reconcile_endpoint(endpoint_id=endpoint.pk) == "converged"
        (build,) = Build.objects.all()
        image = cluster.get("Deployment", f"md-fraud-v{versions[1].pk}", NAMESPACE)
        container = image["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == f"{REPOSITORY}@{build.digest}"
        assert build.log.splitlines()[-2:] == [
            f"Pushed {REPOSITORY}@{build.digest}",
            f"Built {build.image} ({build.digest}) in {build.log.split(' in ')[-1].strip()}",
        ]

        # Another cluster pulling from the same registry: the same build, no engine work.
        other = Target.objects.create(
            team=team, name="cluster-two", kind=TargetKind.KUBERNETES,
            config=_config(kubeconfig, namespace="other"),
        )  # fmt: skip
        second = services.endpoint_create(
            actor=actor, name="fraud-two", target=other, version="adder:1"
        )
        assert reconcile_endpoint(endpoint_id=second.pk) == "converged"
        assert Build.objects.count() == 1
        assert len(engine.built) == len(engine.pushed) == 1
        # Reusing a pushed image asks no engine (this worker may reach only the cluster).
        monkeypatch.setattr(images, "docker_client", _no_engine)
        assert reconcile_endpoint(endpoint_id=second.pk) == "unchanged"
        services.endpoint_stop(actor=actor, endpoint=_reload(second))
        assert reconcile_endpoint(endpoint_id=second.pk) == "stopped"
        third_release = services.endpoint_deploy(
            actor=actor, endpoint=_reload(second), version="adder:1"
        )
        assert reconcile_endpoint(endpoint_id=second.pk) == "converged", third_release
        monkeypatch.setattr(images, "docker_client", lambda config: SimpleNamespace(api=engine))
        deployment = cluster.get("Deployment", f"md-fraud-two-v{versions[1].pk}", "other")
        assert (
            deployment["spec"]["template"]["spec"]["containers"][0]["image"] == (container["image"])
        )

        # A third pushing elsewhere builds and pushes its own.
        elsewhere = "registry.example.com/other/serving"
        third = Target.objects.create(
            team=team, name="cluster-three", kind=TargetKind.KUBERNETES,
            config=_config(kubeconfig, namespace="third",
                           build={"registry": {"repository": elsewhere}}),
        )  # fmt: skip
        services.endpoint_create(actor=actor, name="fraud-three", target=third, version="adder:1")
        assert reconcile_endpoint(endpoint_id=Endpoint.objects.get(name="fraud-three").pk) == (
            "converged"
        )
        assert sorted(Build.objects.values_list("repository", flat=True)) == [
            REPOSITORY, elsewhere
        ]  # fmt: skip
        assert [repository for repository, _ in engine.pushed] == [REPOSITORY, elsewhere]

    def test_a_build_in_flight_for_the_registry_is_shared_and_a_second_one_refused(
        self, endpoint, versions, target, team, kubeconfig, engine
    ):
        from django.db import IntegrityError, transaction

        other = Target.objects.create(
            team=team, name="cluster-two", kind=TargetKind.KUBERNETES, config=_config(kubeconfig)
        )
        pending = images.build_request(version=versions[1], target=target)
        assert pending.status == BuildStatus.PENDING and pending.repository == REPOSITORY
        assert images.build_request(version=versions[1], target=other).pk == pending.pk
        with pytest.raises(IntegrityError), transaction.atomic():
            Build.objects.create(
                version=versions[1], target=other, base_image=pending.base_image,
                repository=REPOSITORY,
            )  # fmt: skip
        # A build that failed does not hold the place: the retry is a new row.
        Build.objects.filter(pk=pending.pk).update(
            status=BuildStatus.FAILED, finished_at=timezone.now() - timedelta(hours=1)
        )
        retry = images.build_request(version=versions[1], target=other)
        assert retry.pk != pending.pk and retry.status == BuildStatus.PENDING
        assert engine.built == []

    def test_builds_pushed_before_the_migration_are_found_by_their_repository(
        self, versions, target, engine
    ):
        from importlib import import_module

        from django.apps import apps

        migration = import_module("deployments.migrations.0004_k8s_build_repository")
        base = {"target": target, "base_image": "modeldeck/base:bookworm"}
        digest = {"digest": _digest(versions[1]), "status": BuildStatus.SUCCEEDED}
        old, newest = (
            Build.objects.create(version=versions[1], image=f"{REPOSITORY}:v{n}", **base, **digest)
            for n in (1, 2)
        )
        local = Build.objects.create(
            version=versions[2], image="modeldeck/serving:version-2", **base, **digest
        )
        migration.record_repositories(apps, None)
        repositories = dict(Build.objects.values_list("pk", "repository"))
        assert repositories == {old.pk: "", newest.pk: REPOSITORY, local.pk: ""}
        assert images.ensure_version_image(version=versions[1], target=target).pk == newest.pk
        assert engine.built == []

    def test_the_manifests_api_exports_serving_releases_pinned_by_digest(
        self, cluster, endpoint, versions, deployer, team, api_for
    ):
        api = api_for(deployer, team)
        url = "/api/v1/endpoints/fraud/releases/1/manifests/"
        before = api.get(url)
        assert before.status_code == 400
        assert "adder:1 has no succeeded image build" in before.json()["error"]
        assert reconcile_endpoint(endpoint_id=endpoint.pk) == "converged"
        response = api.get(url)
        assert response.status_code == 200, response.content
        documents = [d for d in yaml.safe_load_all(response.content.decode()) if d]
        (build,) = Build.objects.all()
        images_used = {
            container["image"]
            for d in documents
            if d["kind"] == "Deployment"
            for container in d["spec"]["template"]["spec"]["containers"]
        }
        assert images_used == {f"{REPOSITORY}@{build.digest}"}
        for document in documents:
            validate_manifest(document)


# --- rollout status, fencing, waiting ---------------------------------------------------------


class TestRolloutAndFencing:
    def test_observe_reads_readiness_from_the_rollout_status(self, cluster, endpoint, versions):
        cluster.auto_rollout = False
        endpoint = _reload(endpoint)
        driver = driver_for(endpoint.target)
        name = f"md-fraud-v{versions[1].pk}"
        driver.ensure_server(endpoint=endpoint, spec=_spec(endpoint, versions[1], replicas=2))

        def server():
            (state,) = driver.observe(endpoint=endpoint).servers
            return state.alive, state.ready, state.detail

        assert server() == (True, False, "waiting for the Deployment controller")
        cluster.set_deployment_status(
            name,
            NAMESPACE,
            observedGeneration=1,
            replicas=2,
            updatedReplicas=1,
            availableReplicas=1,
        )
        assert server() == (True, False, "1 of 2 pods updated")
        cluster.set_deployment_status(
            name,
            NAMESPACE,
            observedGeneration=1,
            replicas=3,
            updatedReplicas=2,
            availableReplicas=2,
        )
        assert server() == (True, False, "1 old pods are terminating")
        cluster.set_deployment_status(
            name,
            NAMESPACE,
            observedGeneration=1,
            replicas=2,
            updatedReplicas=2,
            readyReplicas=1,
            availableReplicas=1,
        )
        assert server() == (True, False, "1 of 2 replicas ready")
        cluster.set_deployment_status(
            name,
            NAMESPACE,
            observedGeneration=1,
            replicas=2,
            updatedReplicas=2,
            readyReplicas=2,
            availableReplicas=1,
        )
        assert server() == (True, False, "1 of 2 updated pods are available")
        cluster.finish_rollout(name, NAMESPACE)
        assert server() == (True, True, "")
        cluster.set_deployment_status(
            name,
            NAMESPACE,
            observedGeneration=1,
            conditions=[
                {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                 "message": 'pods "x" is forbidden: violates PodSecurity "restricted:latest"'}
            ],
        )  # fmt: skip
        alive, ready, detail = server()
        assert (alive, ready) == (False, False)
        assert detail.startswith('FailedCreate: pods "x" is forbidden')

    def test_set_routes_waits_until_every_gateway_pod_serves_the_table(
        self, cluster, endpoint, versions
    ):
        endpoint = _reload(endpoint)
        driver = driver_for(endpoint.target)
        gateway = driver.ensure_gateway(endpoint=endpoint)
        cluster.auto_rollout = False
        route = Route("adder:1", versions[1].pk, "http://x", 100, "primary")
        before = cluster.get("Deployment", "md-fraud-gateway", NAMESPACE)["metadata"]["generation"]

        def controller():
            # The pretend Deployment controller finishes the rollout a little after the apply.
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                current = cluster.get("Deployment", "md-fraud-gateway", NAMESPACE)
                if current["metadata"]["generation"] > before:
                    time.sleep(0.3)
                    cluster.finish_rollout("md-fraud-gateway", NAMESPACE)
                    return
                time.sleep(0.02)

        thread = threading.Thread(target=controller)
        thread.start()
        driver.set_routes(endpoint=endpoint, gateway=gateway, routes=[route], generation=1)
        thread.join()
        assert driver.observe(endpoint=endpoint).gateway.generation == 1

        with pytest.raises(DriverError, match="did not switch to route table 2 within 1 seconds"):
            driver.set_routes(endpoint=endpoint, gateway=gateway, routes=[route], generation=2)
        assert driver.observe(endpoint=endpoint).gateway.generation is None

    def test_a_stale_generation_is_refused_and_changes_nothing(self, cluster, endpoint, versions):
        endpoint = _reload(endpoint)
        driver = driver_for(endpoint.target)
        gateway = driver.ensure_gateway(endpoint=endpoint)
        route = Route("adder:1", versions[1].pk, "http://x", 100, "primary")
        driver.set_routes(endpoint=endpoint, gateway=gateway, routes=[route], generation=5)
        before = cluster.get("ConfigMap", "md-fraud-routes", NAMESPACE)
        with pytest.raises(StaleGeneration, match="generation 5, newer than this run's 4"):
            driver.set_routes(endpoint=endpoint, gateway=gateway, routes=[], generation=4)
        assert cluster.get("ConfigMap", "md-fraud-routes", NAMESPACE) == before
        driver.set_routes(endpoint=endpoint, gateway=gateway, routes=[route], generation=5)
        assert cluster.get("ConfigMap", "md-fraud-routes", NAMESPACE) == before

    def test_a_concurrent_writer_loses_the_compare_and_set(self, cluster, endpoint, versions):
        endpoint = _reload(endpoint)
        driver = driver_for(endpoint.target)
        gateway = driver.ensure_gateway(endpoint=endpoint)
        original_get = driver.api.get

        def get_then_someone_writes(kind, name):
            answer = original_get(kind, name)
            if kind == "ConfigMap":
                newer = routes_config_map(
                    endpoint=_identity(endpoint),
                    release_number=9,
                    document=routes_document(routes=[], generation=9, sticky=None),
                    settings=driver.settings,
                )
                driver.api.apply(newer)
            return answer

        driver.api.get = get_then_someone_writes
        with pytest.raises(StaleGeneration, match="moved to generation 9"):
            driver.set_routes(endpoint=endpoint, gateway=gateway, routes=[], generation=3)
        assert _route_table(cluster)["generation"] == 9

    def test_an_http_route_no_gateway_accepts_fails_the_switch(
        self, cluster, target, endpoint, kubeconfig
    ):
        Target.objects.filter(pk=target.pk).update(config=_config(kubeconfig, **GATEWAY_API))
        cluster.auto_accept = False
        assert reconcile_endpoint(endpoint_id=endpoint.pk) == "failed"
        reason = _reload(endpoint).status_reason
        assert "did not switch to route table 1 within 1 seconds" in reason
        assert "no Gateway controller has reported on the HTTPRoute yet" in reason


# --- the orphan sweep, connection settings ----------------------------------------------------


class TestSweepAndConnection:
    def test_sweep_removes_the_objects_of_deleted_endpoints_only(
        self, cluster, endpoint, target, versions
    ):
        assert reconcile_endpoint(endpoint_id=endpoint.pk) == "converged"
        # An object of another installation in the same namespace must survive.
        foreign = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "someone-else",
                "namespace": NAMESPACE,
                "labels": {
                    "app.kubernetes.io/managed-by": "modeldeck",
                    "modeldeck.io/installation": "ffffffffffffffff",
                    "modeldeck.io/target": str(target.pk),
                    "modeldeck.io/endpoint-id": str(endpoint.pk),
                    "app.kubernetes.io/component": "gateway",
                },
            },
            "data": {},
        }
        driver = driver_for(target)
        driver.api.apply(foreign)
        owned = driver.list_owned()
        found = [(o.role, o.handle, o.endpoint_id, o.version_id, o.release_number) for o in owned]
        assert found == [
            (ResourceRole.GATEWAY, f"gateway:{endpoint.pk}:", endpoint.pk, None, 1),
            (ResourceRole.SERVER, f"server:{endpoint.pk}:{versions[1].pk}", endpoint.pk,
             versions[1].pk, 1),
        ]  # fmt: skip
        assert owned[0].detail == (
            "ConfigMap/md-fraud-routes, Deployment/md-fraud-gateway, "
            "Secret/md-fraud-gateway-token, Service/md-fraud-gateway"
        )
        assert sweep_target(target=target) == 0
        Endpoint.objects.filter(pk=endpoint.pk).delete()
        assert sweep_target(target=target) == 2
        assert [_names(cluster, kind) for kind in ("Deployment", "Service", "Secret")] == [
            [],
            [],
            [],
        ]
        assert _names(cluster, "ConfigMap") == ["someone-else"]
        assert driver.list_owned() == []

    def test_kubeconfig_path_from_an_environment_variable(
        self, cluster, endpoint, target, kubeconfig, monkeypatch
    ):
        config = _config(kubeconfig)
        del config["kubeconfig"]
        config["kubeconfig_env"] = "MODELDECK_TARGET_TEST_KUBECONFIG"
        Target.objects.filter(pk=target.pk).update(config=config)
        monkeypatch.setenv("MODELDECK_TARGET_TEST_KUBECONFIG", str(kubeconfig))
        assert reconcile_endpoint(endpoint_id=endpoint.pk) == "converged"
        monkeypatch.delenv("MODELDECK_TARGET_TEST_KUBECONFIG")
        unset = r"MODELDECK_TARGET_TEST_KUBECONFIG \(the kubeconfig path\) is not set"
        with pytest.raises(DriverError, match=unset):
            driver_for(Target.objects.get(pk=target.pk)).observe(endpoint=_reload(endpoint))
        # The variable's value is checked where it is used: a path outside the folder is refused.
        monkeypatch.setenv("MODELDECK_TARGET_TEST_KUBECONFIG", "/etc/passwd")
        with pytest.raises(DriverError, match="TARGET_CREDENTIALS_DIR"):
            driver_for(Target.objects.get(pk=target.pk)).observe(endpoint=_reload(endpoint))

    def test_the_context_chooses_the_cluster(self, cluster, endpoint, target, kubeconfig):
        # The kubeconfig's current context points at a closed port: only "context" reaches here.
        Target.objects.filter(pk=target.pk).update(
            config={k: v for k, v in _config(kubeconfig).items() if k != "context"}
        )
        assert reconcile_endpoint(endpoint_id=endpoint.pk) == "failed"
        assert "did not answer" in _reload(endpoint).status_reason
        assert cluster.requests == []

    def test_in_cluster_outside_a_cluster_is_a_readable_failure(
        self, endpoint, target, monkeypatch
    ):
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        Target.objects.filter(pk=target.pk).update(config={"in_cluster": True})
        assert reconcile_endpoint(endpoint_id=endpoint.pk) == "failed"
        assert "Could not load the Kubernetes configuration" in _reload(endpoint).status_reason

    def test_refused_credentials_are_a_readable_failure(self, cluster, endpoint):
        cluster.token = "another-token"
        assert reconcile_endpoint(endpoint_id=endpoint.pk) == "failed"
        assert "(401): Unauthorized" in _reload(endpoint).status_reason

    def test_validate_config_refuses_bad_settings_and_keeps_good_ones(self, settings, tmp_path):
        settings.TARGET_CREDENTIALS_DIR = tmp_path
        kubeconfig = str(tmp_path.resolve() / "prod" / "kubeconfig")
        good = {"kubeconfig": kubeconfig, "context": "prod", "namespace": "ml"}
        assert KubernetesDriver.validate_config(good) == good
        for bad in ("~/.kube/config", "/etc/modeldeck/kubeconfig", f"{tmp_path}/../x"):
            with pytest.raises(ApplicationError) as caught:
                KubernetesDriver.validate_config({"kubeconfig": bad})
            assert caught.value.extra == {"config": "kubeconfig"}
        with pytest.raises(ApplicationError) as caught:
            KubernetesDriver.validate_config({"kubeconfig_env": "SECRET_KEY"})
        assert caught.value.extra == {"config": "kubeconfig_env"}


# --- the GitOps export ------------------------------------------------------------------------


class TestExport:
    def _applied(self, cluster) -> list[dict]:
        applied = []
        for body in cluster.applied().values():
            metadata = {k: v for k, v in body["metadata"].items() if k != "resourceVersion"}
            applied.append({**body, "metadata": metadata})
        return sorted(applied, key=lambda o: (o["kind"], o["metadata"]["name"]))

    @pytest.mark.parametrize("traffic", ["gateway", "gateway-api"])
    def test_the_bundle_is_exactly_what_the_driver_applies(
        self, cluster, endpoint, target, actor, kubeconfig, traffic
    ):
        if traffic == "gateway-api":
            Target.objects.filter(pk=target.pk).update(config=_config(kubeconfig, **GATEWAY_API))
        assert reconcile_endpoint(endpoint_id=endpoint.pk) == "converged"
        release = services.endpoint_deploy(
            actor=actor, endpoint=_reload(endpoint), version="adder:2", weight=20
        )
        # The two-version release applied onto an empty cluster: every object is applied anew.
        cluster.objects.clear()
        cluster.take_requests()
        assert reconcile_endpoint(endpoint_id=endpoint.pk) == "converged"
        bundle = export_manifests(release)
        documents = [d for d in yaml.safe_load_all(bundle) if d is not None]
        assert sorted(documents, key=lambda o: (o["kind"], o["metadata"]["name"])) == (
            self._applied(cluster)
        )
        assert documents == release_objects(release)
        assert bundle.startswith(f"# Modeldeck endpoint fraud, release {release.number} (deploy),")
        assert "&id" not in bundle and "*id" not in bundle
        for document in documents:
            validate_manifest(document)

    def test_an_earlier_release_renders_with_its_own_number(self, cluster, endpoint, actor):
        first = _reload(endpoint).desired_release
        with pytest.raises(DriverError, match="adder:1 has no succeeded image build"):
            export_manifests(first)
        assert reconcile_endpoint(endpoint_id=endpoint.pk) == "converged"  # builds adder:1
        services.endpoint_deploy(
            actor=actor, endpoint=_reload(endpoint), version="adder:2", weight=20
        )
        documents = list(yaml.safe_load_all(export_manifests(first)))
        config_map = next(d for d in documents if d and d["kind"] == "ConfigMap")
        assert json.loads(config_map["data"]["routes.json"])["generation"] == 1
        assert {d["metadata"]["labels"]["modeldeck.io/release"] for d in documents if d} == {"1"}

    def test_a_stop_release_exports_no_objects(self, endpoint, actor):
        stop = services.endpoint_stop(actor=actor, endpoint=_reload(endpoint))
        bundle = export_manifests(stop)
        assert [d for d in yaml.safe_load_all(bundle) if d is not None] == []
        assert "stops the endpoint" in bundle

    def test_other_target_kinds_have_no_manifests(self, versions, dev_target, actor):
        local = services.endpoint_create(
            actor=actor, name="local", target=dev_target, version="adder:1"
        )
        with pytest.raises(DriverError, match="only for releases on Kubernetes targets"):
            export_manifests(local.desired_release)
