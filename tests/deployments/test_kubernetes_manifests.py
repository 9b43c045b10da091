"""Kubernetes manifest builders: real-schema validity, Pod Security "restricted", names, labels,
images by digest, the gateway's route table and the Gateway API route. Pure: no database."""

from __future__ import annotations

import base64
import copy
import hashlib
import json

import kubernetes_validate
import pytest
from modeldeck_runtime.routing import parse_table

from deployments.targets.base import DriverError
from deployments.targets.kubernetes.config import ConfigError, kubernetes_settings
from deployments.targets.kubernetes.manifests import (
    EndpointIdentity,
    ServingVersion,
    http_route,
    release_manifests,
    routes_for_variants,
    scaling_manifests,
    server_manifests,
)
from deployments.targets.kubernetes.validation import (
    ManifestInvalid,
    kubernetes_versions,
    validate_manifest,
)

INSTALLATION = "0123456789abcdef"
ENDPOINT = EndpointIdentity(endpoint_id=7, name="fraud", target_id=3, installation=INSTALLATION)
REPOSITORY = "registry.example.com:5000/modeldeck/serving"
TOKEN = "f" * 64
GATEWAY_API = {
    "namespace": "models",
    "traffic": "gateway-api",
    "gateway_api": {
        "parent": {"name": "public", "namespace": "gateways", "section_name": "https"},
        "hostname": "{endpoint}.models.example.com",
    },
}


def _version(number: int) -> ServingVersion:
    return ServingVersion(
        version_id=number + 40,
        reference=f"adder:{number}",
        model_name="adder",
        number=number,
        sha256=f"{number}" * 64,
        image=f"{REPOSITORY}@sha256:{number:064x}",
    )


VERSIONS = {version.version_id: version for version in map(_version, (1, 2, 3))}


def _variant(number: int, weight: int, role: str, mirror: int = 0) -> dict:
    return {
        "version_id": number + 40,
        "version": f"adder:{number}",
        "weight": weight,
        "role": role,
        "mirror_percent": mirror,
    }


TWO_WEIGHTED = [_variant(1, 80, "primary"), _variant(2, 20, "candidate")]
WITH_SHADOW = [*TWO_WEIGHTED, _variant(3, 0, "shadow", mirror=100)]
AUTOSCALE = {"min": 2, "max": 6, "target_cpu_percent": 70}
# Per-version scale: a fixed count, an autoscaler, and one pod.
SCALED = [
    {**_variant(1, 80, "primary"), "replicas": 3},
    {**_variant(2, 20, "candidate"), "autoscale": AUTOSCALE},
    {**_variant(3, 0, "shadow", mirror=100), "replicas": 1},
]


def _manifests(config: dict | None = None, variants=WITH_SHADOW, sticky=None) -> list[dict]:
    return release_manifests(
        endpoint=ENDPOINT,
        variants=variants,
        versions=VERSIONS,
        release_number=4,
        replicas=2,
        generation=9,
        sticky=sticky,
        token=TOKEN,
        gateway_image=VERSIONS[41].image,
        settings=kubernetes_settings({"namespace": "models"} if config is None else config),
    )


def _by(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _pod_templates(objects: list[dict]) -> list[dict]:
    return [o["spec"]["template"] for o in objects if o["kind"] == "Deployment"]


class TestRealSchemas:
    @pytest.mark.parametrize("version", kubernetes_versions())
    @pytest.mark.parametrize("traffic", ["gateway", "gateway-api"])
    def test_every_object_validates_against_the_kubernetes_schemas(self, traffic, version):
        config = GATEWAY_API if traffic == "gateway-api" else {"namespace": "models"}
        objects = _manifests(config, variants=SCALED, sticky=None)
        kinds = sorted({o["kind"] for o in objects})
        expected = ["Deployment", "HTTPRoute", "HorizontalPodAutoscaler"]
        if traffic == "gateway":
            expected = ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Secret"]
        assert kinds == sorted([*expected, "PodDisruptionBudget", "Service"])
        for manifest in objects:
            validate_manifest(manifest, version)

    def test_the_package_validator_agrees_on_every_builtin_kind(self):
        objects = _manifests(variants=SCALED, sticky={"header": "X-User-Id"})
        assert sorted({o["kind"] for o in objects}) == [
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "Secret",
            "Service",
        ]
        for manifest in objects:
            assert kubernetes_validate.validate(copy.deepcopy(manifest), "1.29", strict=True)

    def test_an_empty_http_route_of_a_new_endpoint_validates(self):
        route = http_route(
            endpoint=ENDPOINT,
            release_number=1,
            routes=[],
            generation=0,
            sticky=None,
            settings=kubernetes_settings(GATEWAY_API),
        )
        assert route["spec"]["rules"] == []
        validate_manifest(route)

    @pytest.mark.parametrize(
        ("kind", "breakage", "message"),
        [
            (
                "Deployment",
                lambda d: d["spec"]["template"]["spec"].update(runAsUser=0),
                "runAsUser",
            ),
            ("Deployment", lambda d: d["spec"].update(replicas="two"), "'two' is not of type"),
            ("Service", lambda s: s["spec"]["ports"][0].update(port="http"), "not of type"),
            ("ConfigMap", lambda c: c.update(datta={}), "'datta' was unexpected"),
            (
                "HTTPRoute",
                lambda r: r["spec"]["rules"][0]["backendRefs"][0].update(weight=-1),
                "-1",
            ),
            ("HTTPRoute", lambda r: r["spec"].update(hostnames=["Not_A_Host"]), "Not_A_Host"),
        ],
    )
    def test_the_schemas_catch_broken_manifests(self, kind, breakage, message):
        objects = _manifests(GATEWAY_API) + _manifests()
        manifest = copy.deepcopy(next(o for o in objects if o["kind"] == kind))
        breakage(manifest)
        with pytest.raises(ManifestInvalid, match=message):
            validate_manifest(manifest)


class TestPodSecurity:
    @pytest.mark.parametrize("traffic", ["gateway", "gateway-api"])
    def test_every_pod_template_is_restricted(self, traffic):
        config = GATEWAY_API if traffic == "gateway-api" else {"namespace": "models"}
        templates = _pod_templates(_manifests(config))
        assert len(templates) == (3 if traffic == "gateway-api" else 4)
        for template in templates:
            pod = template["spec"]
            assert pod["automountServiceAccountToken"] is False
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["runAsUser"] == 10001
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            assert {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}} in pod["volumes"]
            assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
            for volume in pod["volumes"]:
                assert set(volume) - {"name"} <= {"emptyDir", "configMap", "secret"}
            for container in pod["containers"]:
                security = container["securityContext"]
                assert security["runAsNonRoot"] is True
                assert security["runAsUser"] == 10001
                assert security["allowPrivilegeEscalation"] is False
                assert security["privileged"] is False
                assert security["readOnlyRootFilesystem"] is True
                assert security["capabilities"] == {"drop": ["ALL"]}
                assert security["seccompProfile"] == {"type": "RuntimeDefault"}
                assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
                assert "ports" in container and all("hostPort" not in p for p in container["ports"])


class TestVersionServers:
    def test_server_deployment_runs_the_image_by_digest_with_runtime_probes(self):
        service, deployment = server_manifests(
            endpoint=ENDPOINT,
            version=VERSIONS[42],
            role="candidate",
            release_number=4,
            replicas=3,
            settings=kubernetes_settings({"namespace": "models", "threads": 2}),
        )
        assert deployment["metadata"]["name"] == service["metadata"]["name"] == "md-fraud-v42"
        assert deployment["metadata"]["namespace"] == "models"
        assert deployment["spec"]["replicas"] == 3
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == f"{REPOSITORY}@sha256:{2:064x}"
        assert container["command"] == ["modeldeck-serve"]
        assert container["args"] == [
            "--model-dir", "/opt/model", "--model-name", "fraud", "--model-version", "adder:2",
            "--endpoint", "fraud", "--variant", "candidate", "--threads", "2",
            "--host", "0.0.0.0",  # noqa: S104
            "--port", "8080", "--drain-seconds", "20",
        ]  # fmt: skip
        assert container["readinessProbe"]["httpGet"] == {
            "path": "/v2/health/ready", "port": "http", "scheme": "HTTP"
        }  # fmt: skip
        assert container["livenessProbe"]["httpGet"] == {
            "path": "/v2/health/live", "port": "http", "scheme": "HTTP"
        }  # fmt: skip
        assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
        assert service["spec"]["ports"] == [
            {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}
        ]
        assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]

    def test_labels_select_by_ids_and_name_the_release_and_role_on_metadata_only(self):
        _, deployment = server_manifests(
            endpoint=ENDPOINT,
            version=VERSIONS[41],
            role="primary",
            release_number=4,
            replicas=1,
            settings=kubernetes_settings({}),
        )
        selector = {
            "app.kubernetes.io/managed-by": "modeldeck",
            "modeldeck.io/installation": INSTALLATION,
            "modeldeck.io/target": "3",
            "modeldeck.io/endpoint-id": "7",
            "app.kubernetes.io/component": "server",
            "modeldeck.io/version": "41",
        }
        pod_labels = {
            **selector,
            "app.kubernetes.io/name": "modeldeck-server",
            "app.kubernetes.io/instance": "fraud",
            "modeldeck.io/endpoint": "fraud",
        }
        assert deployment["spec"]["selector"] == {"matchLabels": selector}
        assert deployment["spec"]["template"]["metadata"]["labels"] == pod_labels
        assert deployment["metadata"]["labels"] == {
            **pod_labels,
            "modeldeck.io/release": "4",
            "modeldeck.io/role": "primary",
        }
        annotations = {
            "modeldeck.io/model": "adder",
            "modeldeck.io/model-version": "adder:1",
            "modeldeck.io/sha256": "1" * 64,
        }
        assert deployment["metadata"]["annotations"] == annotations
        assert deployment["spec"]["template"]["metadata"]["annotations"] == annotations

    def test_a_new_release_changes_no_pod_template_of_a_kept_version(self):
        def template(release_number):
            return server_manifests(
                endpoint=ENDPOINT,
                version=VERSIONS[41],
                role="primary",
                release_number=release_number,
                replicas=1,
                settings=kubernetes_settings({}),
            )[1]["spec"]["template"]

        assert template(4) == template(5)

    def test_resources_default_and_come_from_the_target(self):
        default = _manifests()
        server = _by(default, "Deployment")["md-fraud-v41"]
        gateway = _by(default, "Deployment")["md-fraud-gateway"]
        assert server["spec"]["template"]["spec"]["containers"][0]["resources"] == {
            "requests": {"cpu": "250m", "memory": "512Mi"},
            "limits": {"cpu": "2", "memory": "2Gi"},
        }
        assert gateway["spec"]["template"]["spec"]["containers"][0]["resources"] == {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"cpu": "1", "memory": "512Mi"},
        }
        custom = _manifests(
            {"resources": {"server": {"limits": {"memory": "4Gi", "ephemeral-storage": "1Gi"}}}}
        )
        server = _by(custom, "Deployment")["md-fraud-v41"]
        assert server["spec"]["template"]["spec"]["containers"][0]["resources"] == {
            "requests": {"cpu": "250m", "memory": "512Mi"},
            "limits": {"cpu": "2", "memory": "4Gi", "ephemeral-storage": "1Gi"},
        }

    def test_image_pull_secrets_reach_every_pod(self):
        objects = _manifests({"image_pull_secrets": ["registry-credentials"]})
        for template in _pod_templates(objects):
            assert template["spec"]["imagePullSecrets"] == [{"name": "registry-credentials"}]

    @pytest.mark.parametrize(
        "image",
        [
            f"{REPOSITORY}:latest",
            f"{REPOSITORY}@sha256:{'A' * 64}",
            "sha256:" + "a" * 64,
            f"{REPOSITORY}@sha256:{'a' * 64}; rm -rf /",
        ],
    )
    def test_only_images_by_digest_are_deployed(self, image):
        version = ServingVersion(41, "adder:1", "adder", 1, "1" * 64, image)
        with pytest.raises(DriverError, match="by digest"):
            server_manifests(
                endpoint=ENDPOINT,
                version=version,
                role="primary",
                release_number=1,
                replicas=1,
                settings=kubernetes_settings({}),
            )

    @pytest.mark.parametrize(
        "name", ["Fraud", "-fraud", "fraud_api", "a" * 41, "x; rm", "../x", ""]
    )
    def test_object_names_come_only_from_checked_endpoint_names(self, name):
        endpoint = EndpointIdentity(
            endpoint_id=7, name=name, target_id=3, installation=INSTALLATION
        )
        with pytest.raises(DriverError, match="not a DNS label"):
            _manifests_for(endpoint)

    def test_every_object_name_is_a_dns_label_made_of_the_endpoint_name_and_ids(self):
        endpoint = EndpointIdentity(
            endpoint_id=7, name="9" * 40, target_id=3, installation=INSTALLATION
        )
        names = sorted(o["metadata"]["name"] for o in _manifests_for(endpoint))
        stem = "md-" + "9" * 40
        assert names == sorted(
            [f"{stem}-gateway-token", f"{stem}-routes", f"{stem}-v41", f"{stem}-v42",
             f"{stem}-v43", f"{stem}-gateway", f"{stem}-v41", f"{stem}-v42", f"{stem}-v43",
             f"{stem}-gateway"]
        )  # fmt: skip
        assert all(len(name) <= 63 for name in names)


def _manifests_for(endpoint: EndpointIdentity) -> list[dict]:
    return release_manifests(
        endpoint=endpoint,
        variants=WITH_SHADOW,
        versions=VERSIONS,
        release_number=1,
        replicas=1,
        generation=1,
        sticky=None,
        token=TOKEN,
        gateway_image=VERSIONS[41].image,
        settings=kubernetes_settings({}),
    )


class TestGateway:
    def test_route_table_config_map_holds_the_weights_the_runtime_accepts(self):
        objects = _manifests(sticky={"cookie": "uid"})
        config_map = _by(objects, "ConfigMap")["md-fraud-routes"]
        assert config_map["metadata"]["annotations"] == {"modeldeck.io/generation": "9"}
        document = json.loads(config_map["data"]["routes.json"])
        assert document == {
            "generation": 9,
            "sticky": {"cookie": "uid"},
            "routes": [
                {"version": "adder:1", "upstream": "http://md-fraud-v41.models.svc:8080",
                 "weight": 80, "role": "primary"},
                {"version": "adder:2", "upstream": "http://md-fraud-v42.models.svc:8080",
                 "weight": 20, "role": "candidate"},
                {"version": "adder:3", "upstream": "http://md-fraud-v43.models.svc:8080",
                 "weight": 0, "role": "shadow", "mirror_percent": 100},
            ],
        }  # fmt: skip
        table = parse_table(document)
        assert table.generation == 9
        assert [route.version for route in table.live] == ["adder:1", "adder:2"]

    def test_gateway_reads_the_mounted_table_and_its_token_from_the_secret(self):
        objects = _manifests()
        deployment = _by(objects, "Deployment")["md-fraud-gateway"]
        config_map = _by(objects, "ConfigMap")["md-fraud-routes"]
        secret = _by(objects, "Secret")["md-fraud-gateway-token"]
        pod = deployment["spec"]["template"]
        container = pod["spec"]["containers"][0]
        assert container["command"] == ["modeldeck-gateway"]
        assert container["args"] == [
            "--endpoint", "fraud", "--routes-file", "/etc/modeldeck/routes/routes.json",
            "--host", "0.0.0.0",  # noqa: S104
            "--port", "8000", "--drain-seconds", "20",
        ]  # fmt: skip
        assert {"name": "routes", "mountPath": "/etc/modeldeck/routes", "readOnly": True} in (
            container["volumeMounts"]
        )
        assert {
            "name": "routes",
            "configMap": {
                "name": "md-fraud-routes",
                "items": [{"key": "routes.json", "path": "routes.json"}],
                "defaultMode": 0o444,
            },
        } in pod["spec"]["volumes"]
        assert container["env"] == [
            {
                "name": "MODELDECK_GATEWAY_ADMIN_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": "md-fraud-gateway-token", "key": "token"}},
            }
        ]
        assert base64.b64decode(secret["data"]["token"]).decode() == TOKEN
        assert secret["type"] == "Opaque"
        assert container["readinessProbe"]["httpGet"]["path"] == "/-/health"
        assert container["livenessProbe"]["httpGet"]["path"] == "/-/health"
        text = config_map["data"]["routes.json"]
        assert pod["metadata"]["annotations"] == {
            "modeldeck.io/routes-sha256": hashlib.sha256(text.encode()).hexdigest(),
            "modeldeck.io/routes-generation": "9",
        }
        assert deployment["spec"]["strategy"] == {
            "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}
        }  # fmt: skip

    def test_new_weights_roll_the_gateway_and_nothing_else(self):
        before = _manifests(variants=TWO_WEIGHTED)
        after = _manifests(variants=[_variant(1, 50, "primary"), _variant(2, 50, "candidate")])
        changed = [
            (b["kind"], b["metadata"]["name"]) for b, a in zip(before, after, strict=True) if a != b
        ]
        assert changed == [("ConfigMap", "md-fraud-routes"), ("Deployment", "md-fraud-gateway")]

    def test_gateway_service_type_comes_from_the_target(self):
        objects = _manifests({"gateway_service_type": "LoadBalancer"})
        services = _by(objects, "Service")
        assert services["md-fraud-gateway"]["spec"]["type"] == "LoadBalancer"
        assert services["md-fraud-v41"]["spec"]["type"] == "ClusterIP"
        assert services["md-fraud-gateway"]["spec"]["ports"][0]["port"] == 8000

    @pytest.mark.parametrize("version", kubernetes_versions())
    def test_prediction_log_url_reaches_the_gateway_pods_and_the_manifests_still_validate(
        self, version
    ):
        config = {"namespace": "models", "prediction_log_url": "http://modeldeck.web.svc:8000/"}
        objects = _manifests(config)
        gateway = _by(objects, "Deployment")["md-fraud-gateway"]
        assert gateway["spec"]["template"]["spec"]["containers"][0]["env"] == [
            {
                "name": "MODELDECK_GATEWAY_ADMIN_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": "md-fraud-gateway-token", "key": "token"}},
            },
            {
                "name": "MODELDECK_GATEWAY_PREDICTION_LOG_URL",
                "value": "http://modeldeck.web.svc:8000/api/v1/endpoints/fraud/predictions/",
            },
        ]
        # Only the gateway is told: version servers log nothing themselves.
        for name, deployment in _by(objects, "Deployment").items():
            if name != "md-fraud-gateway":
                assert "env" not in deployment["spec"]["template"]["spec"]["containers"][0]
        for manifest in objects:
            validate_manifest(manifest, version)

    def test_without_prediction_log_url_the_gateway_logs_nothing(self):
        gateway = _by(_manifests(), "Deployment")["md-fraud-gateway"]
        names = [e["name"] for e in gateway["spec"]["template"]["spec"]["containers"][0]["env"]]
        assert names == ["MODELDECK_GATEWAY_ADMIN_TOKEN"]
        assert kubernetes_settings({"prediction_log_url": ""}).prediction_log_url == ""


class TestGatewayApi:
    def test_http_route_splits_by_weight_mirrors_shadows_and_pins_versions(self):
        routes = routes_for_variants(
            endpoint_name="fraud",
            variants=[*TWO_WEIGHTED, _variant(3, 0, "shadow", mirror=25)],
            namespace="models",
        )
        route = http_route(
            endpoint=ENDPOINT,
            release_number=4,
            routes=routes,
            generation=9,
            sticky=None,
            settings=kubernetes_settings(GATEWAY_API),
        )
        assert route["metadata"]["name"] == "md-fraud"
        assert route["metadata"]["annotations"] == {"modeldeck.io/generation": "9"}
        assert route["spec"]["parentRefs"] == [
            {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public",
             "namespace": "gateways", "sectionName": "https"}
        ]  # fmt: skip
        assert route["spec"]["hostnames"] == ["fraud.models.example.com"]
        split, *pins = route["spec"]["rules"]
        assert split["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
        assert split["backendRefs"] == [
            {"name": "md-fraud-v41", "port": 8080, "weight": 80},
            {"name": "md-fraud-v42", "port": 8080, "weight": 20},
        ]
        assert split["filters"] == [
            {
                "type": "RequestMirror",
                "requestMirror": {
                    "backendRef": {"name": "md-fraud-v43", "port": 8080},
                    "percent": 25,
                },
            }
        ]
        assert [
            (p["matches"][0]["headers"][0]["value"], p["backendRefs"][0]["name"]) for p in pins
        ] == [
            ("adder:1", "md-fraud-v41"),
            ("adder:2", "md-fraud-v42"),
            ("adder:3", "md-fraud-v43"),
        ]
        # Percentage mirroring is Gateway API v1.3+; without it the route matches the v1.0 schema.
        del split["filters"][0]["requestMirror"]["percent"]
        validate_manifest(route)

    def test_sticky_sessions_need_the_modeldeck_gateway(self):
        with pytest.raises(DriverError, match="Sticky sessions"):
            _manifests(GATEWAY_API, sticky={"header": "X-User-Id"})


class TestTargetConfig:
    def test_defaults(self):
        settings = kubernetes_settings({})
        assert settings.namespace == "default"
        assert settings.traffic == "gateway"
        assert settings.gateway_replicas == 1
        assert settings.switch_timeout_seconds == 60.0
        assert not settings.in_cluster and not settings.kubeconfig

    @pytest.mark.parametrize(
        ("config", "key"),
        [
            ({"namespace": "Models"}, "namespace"),
            ({"kubeconfig": "relative/kubeconfig"}, "kubeconfig"),
            ({"kubeconfig": "/etc/kube", "kubeconfig_env": "KUBECONFIG_PROD"}, "kubeconfig_env"),
            ({"kubeconfig_env": "NOT A NAME"}, "kubeconfig_env"),
            ({"in_cluster": "yes"}, "in_cluster"),
            ({"in_cluster": True, "context": "prod"}, "in_cluster"),
            ({"traffic": "istio"}, "traffic"),
            ({"traffic": "gateway-api"}, "gateway_api"),
            ({"gateway_api": {"parent": {"name": "public"}}}, "gateway_api"),
            (
                {"traffic": "gateway-api", "gateway_api": {"parent": {"name": "Bad Name"}}},
                "gateway_api",
            ),
            ({"resources": {"server": {"limits": {"gpu": "1"}}}}, "resources"),
            ({"resources": {"server": {"limits": {"memory": "lots"}}}}, "resources"),
            ({"gateway_image": "repo/gateway:latest"}, "gateway_image"),
            ({"gateway_replicas": 0}, "gateway_replicas"),
            ({"gateway_service_type": "ExternalName"}, "gateway_service_type"),
            ({"image_pull_secrets": ["Bad Secret"]}, "image_pull_secrets"),
            ({"public_url": "javascript:alert(1)"}, "public_url"),
            ({"public_url": "https://models.example.com/\n"}, "public_url"),
            ({"prediction_log_url": "modeldeck.web.svc:8000"}, "prediction_log_url"),
            ({"prediction_log_url": "ftp://modeldeck.web.svc/"}, "prediction_log_url"),
            ({"prediction_log_url": "http://user:pw@modeldeck.web.svc"}, "prediction_log_url"),
            ({"prediction_log_url": "http://modeldeck.web.svc/?x=1"}, "prediction_log_url"),
            ({"prediction_log_url": "http://modeldeck.web.svc:99999"}, "prediction_log_url"),
            ({"prediction_log_url": "http://x.svc/\n"}, "prediction_log_url"),
            ({"prediction_log_url": 8000}, "prediction_log_url"),
            ({"kubeconfig_content": "apiVersion: v1"}, "kubeconfig_content"),
            ({"build": {"docker_host": "unix:///var/run/docker.sock"}}, "build"),
            ({"build": {"registry": {"repository": "no-domain"}}}, "build"),
            ({"build": {"registry": {"repository": "r.example.com/x", "password": "pw"}}}, "build"),
            (
                {"build": {"registry": {"repository": "r.example.com/x", "username_env": "U"}}},
                "build",
            ),
            ({"build": {"registry": {"repository": "r.example.com/x"}, "env": {}}}, "build"),
            ({"build": "registry.example.com/x"}, "build"),
        ],
    )
    def test_bad_settings_are_refused_with_their_key(self, config, key):
        with pytest.raises(ConfigError) as caught:
            kubernetes_settings(config)
        assert caught.value.key == key

    def test_build_names_an_engine_and_the_registry_with_credential_variables_only(self):
        settings = kubernetes_settings(
            {
                "build": {
                    "base_image": "modeldeck/base:bookworm",
                    "registry": {
                        "repository": "registry.example.com:5000/ml/serving",
                        "username_env": "MODELDECK_TARGET_ALPHA_REGISTRY_USER",
                        "password_env": "MODELDECK_TARGET_ALPHA_REGISTRY_PASSWORD",
                    },
                }
            }
        )
        assert settings.build.docker_host is None  # the worker's own engine
        assert settings.build.registry == {
            "repository": "registry.example.com:5000/ml/serving",
            "username_env": "MODELDECK_TARGET_ALPHA_REGISTRY_USER",
            "password_env": "MODELDECK_TARGET_ALPHA_REGISTRY_PASSWORD",
        }
        assert kubernetes_settings({}).build is None


class TestScale:
    def test_each_version_gets_its_own_replicas_autoscaler_and_disruption_budget(self):
        objects = _manifests(variants=SCALED)
        deployments = _by(objects, "Deployment")
        assert deployments["md-fraud-v41"]["spec"]["replicas"] == 3
        # The autoscaler owns the count: the applied Deployment leaves it out.
        assert "replicas" not in deployments["md-fraud-v42"]["spec"]
        assert deployments["md-fraud-v43"]["spec"]["replicas"] == 1
        (autoscaler,) = _by(objects, "HorizontalPodAutoscaler").values()
        assert autoscaler["metadata"]["name"] == "md-fraud-v42"
        assert autoscaler["spec"] == {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": "md-fraud-v42",
            },
            "minReplicas": 2,
            "maxReplicas": 6,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        }
        budgets = _by(objects, "PodDisruptionBudget")
        assert sorted(budgets) == ["md-fraud-v41", "md-fraud-v42"]
        for name, budget in budgets.items():
            selector = deployments[name]["spec"]["selector"]
            assert budget["spec"] == {"maxUnavailable": 1, "selector": selector}
        # The autoscaler comes after the Deployment it scales.
        order = [(o["kind"], o["metadata"]["name"]) for o in objects]
        assert order.index(("HorizontalPodAutoscaler", "md-fraud-v42")) > order.index(
            ("Deployment", "md-fraud-v42")
        )

    def test_without_per_version_scale_the_release_count_applies(self):
        objects = _manifests(variants=TWO_WEIGHTED)
        assert {n: d["spec"]["replicas"] for n, d in _by(objects, "Deployment").items()} == {
            "md-fraud-v41": 2,
            "md-fraud-v42": 2,
            "md-fraud-gateway": 1,
        }
        assert sorted(_by(objects, "PodDisruptionBudget")) == ["md-fraud-v41", "md-fraud-v42"]
        assert _by(objects, "HorizontalPodAutoscaler") == {}

    def test_a_single_fixed_pod_has_no_scaling_objects(self):
        settings = kubernetes_settings({"namespace": "models"})
        arguments = {"endpoint": ENDPOINT, "version": VERSIONS[41], "role": "primary"}
        assert scaling_manifests(**arguments, release_number=1, replicas=1, settings=settings) == []

    @pytest.mark.parametrize(
        ("replicas", "autoscale", "message"),
        [
            (0, None, "replicas must be from 1 to 20"),
            (21, None, "replicas must be from 1 to 20"),
            ("3", None, "replicas must be a whole number"),
            (True, None, "replicas must be a whole number"),
            (1, {"min": 3, "max": 2, "target_cpu_percent": 50}, "1 <= min <= max <= 20"),
            (1, {"min": 1, "max": 21, "target_cpu_percent": 50}, "1 <= min <= max <= 20"),
            (1, {"min": 1, "max": 2, "target_cpu_percent": 0}, "target_cpu_percent"),
            (1, {"min": 1, "max": 2}, "takes min, max and target_cpu_percent"),
        ],
    )
    def test_bad_scale_is_refused(self, replicas, autoscale, message):
        settings = kubernetes_settings({"namespace": "models"})
        with pytest.raises(DriverError, match=message):
            server_manifests(
                endpoint=ENDPOINT,
                version=VERSIONS[41],
                role="primary",
                release_number=1,
                replicas=replicas,
                autoscale=autoscale,
                settings=settings,
            )
