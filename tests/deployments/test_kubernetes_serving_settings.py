"""A Kubernetes target's serving settings — `workers`, `batch_max_rows`, `batch_max_delay_us` —
checked where the target is created or edited (400 naming the key; `workers` at most the cores of
the server pods' CPU limit), passed as modeldeck-serve flags to every version server's pods, and
absent: the manifests stay byte-for-byte those rendered before the settings existed.

The end-to-end test takes the user's path: the target is created through the REST API, the
endpoint deployed and scaled through it, the real reconciler applies the releases to the fake API
server (k8s_fake_api.py) and the applied Deployments and the GitOps export are read back."""

from __future__ import annotations

import hashlib
import json
import random
from fractions import Fraction

import pytest
import yaml

from accounts.models import AuditEvent
from deployments import services
from deployments.models import Endpoint, Target, TargetKind
from deployments.reconciler import reconcile_endpoint
from deployments.targets.kubernetes.config import ConfigError, kubernetes_settings
from deployments.targets.kubernetes.manifests import server_manifests
from deployments.targets.kubernetes.validation import validate_manifest
from tests.deployments.test_kubernetes_driver import (
    NAMESPACE,
    REPOSITORY,
    _fast_reconciles,
    cluster,
    engine,
)
from tests.deployments.test_kubernetes_manifests import (
    ENDPOINT,
    GATEWAY_API,
    SCALED,
    VERSIONS,
    WITH_SHADOW,
    _by,
    _manifests,
)

__all__ = ["_fast_reconciles", "cluster", "engine"]  # shared fixtures

SERVING = {"workers": 2, "batch_max_rows": 32, "batch_max_delay_us": 0}
FLAGS = ["--workers", "2", "--batch-max-rows", "32", "--batch-max-delay-us", "0"]
# sha256 of json.dumps(_manifests(config, variants)) rendered by main at f37dd74, before these
# settings existed: a target without them must render exactly these bytes.
BEFORE = {
    "plain": "395b8b5c754a3454bd6257297806ec7b8f2259b6098da7a25cb7721d1a9450ea",
    "scaled": "af4ddd06ba6d1fde165c52c0fe8bd90769e7e2c0aa9014fee8ebf02f36e925f3",
    "gateway-api": "dc4359273403dbaae948264645379e97b5a386dcf2fd78778665552df1faad69",
}
SCALED_CONFIG = {
    "namespace": "models",
    "threads": 2,
    "resources": {"server": {"limits": {"cpu": "500m"}}},
}


def _refused(config: dict) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        kubernetes_settings(config)
    return caught.value


def _serving(config: dict) -> tuple[int, int, int | None]:
    settings = kubernetes_settings(config)
    return settings.workers, settings.batch_max_rows, settings.batch_max_delay_us


def _args(deployment: dict) -> list[str]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container["args"]


# --- the settings -----------------------------------------------------------------------------


class TestSettings:
    def test_defaults_pass_nothing(self):
        assert _serving({}) == (1, 0, None)

    def test_good_values_are_kept(self):
        assert _serving(SERVING) == (2, 32, 0)
        largest = {"workers": 16, "batch_max_rows": 10000, "batch_max_delay_us": 1_000_000}
        resources = {"server": {"limits": {"cpu": "16"}}}
        assert _serving({**largest, "resources": resources}) == (16, 10000, 1_000_000)

    @pytest.mark.parametrize(
        ("config", "key", "message"),
        [
            ({"workers": 0}, "workers", "workers must be a whole number from 1 to 16."),
            ({"workers": 17}, "workers", "workers must be a whole number from 1 to 16."),
            ({"workers": "2"}, "workers", "workers must be a whole number from 1 to 16."),
            ({"workers": 2.0}, "workers", "workers must be a whole number from 1 to 16."),
            ({"workers": True}, "workers", "workers must be a whole number from 1 to 16."),
            ({"workers": None}, "workers", "workers must be a whole number from 1 to 16."),
            (
                {"batch_max_rows": -1},
                "batch_max_rows",
                "batch_max_rows must be a whole number from 0 to 10000.",
            ),
            (
                {"batch_max_rows": 10001},
                "batch_max_rows",
                "batch_max_rows must be a whole number from 0 to 10000.",
            ),
            (
                {"batch_max_rows": "32"},
                "batch_max_rows",
                "batch_max_rows must be a whole number from 0 to 10000.",
            ),
            (
                {"batch_max_rows": 32, "batch_max_delay_us": -1},
                "batch_max_delay_us",
                "batch_max_delay_us must be a whole number from 0 to 1000000.",
            ),
            (
                {"batch_max_rows": 32, "batch_max_delay_us": 1_000_001},
                "batch_max_delay_us",
                "batch_max_delay_us must be a whole number from 0 to 1000000.",
            ),
            (
                {"batch_max_rows": 32, "batch_max_delay_us": 200.5},
                "batch_max_delay_us",
                "batch_max_delay_us must be a whole number from 0 to 1000000.",
            ),
            (
                {"batch_max_delay_us": 0},
                "batch_max_delay_us",
                "batch_max_delay_us needs batch_max_rows above 0: without batching it does "
                "nothing.",
            ),
            (
                {"batch_max_rows": 0, "batch_max_delay_us": 200},
                "batch_max_delay_us",
                "batch_max_delay_us needs batch_max_rows above 0: without batching it does "
                "nothing.",
            ),
        ],
    )
    def test_bad_values_are_refused_with_their_key(self, config, key, message):
        error = _refused(config)
        assert (error.key, str(error)) == (key, message)

    @pytest.mark.parametrize(
        ("limit", "cores"),
        [("2", 2), ("500m", 1), ("1", 1), ("1500m", 2), ("1001m", 2), ("2.5", 3), ("0", 1)],
    )
    def test_workers_fit_the_cores_of_the_server_cpu_limit(self, limit, cores):
        resources = {"server": {"limits": {"cpu": limit}}}
        assert kubernetes_settings({"workers": cores, "resources": resources}).workers == cores
        error = _refused({"workers": cores + 1, "resources": resources})
        assert error.key == "workers"
        assert str(error) == (
            f"workers ({cores + 1}) exceeds the {cores} core(s) of the server pods' CPU limit "
            f'(resources.server.limits.cpu "{limit}"): lower workers or raise the limit.'
        )

    def test_the_default_limit_of_two_cores_bounds_workers(self):
        assert kubernetes_settings({"workers": 2}).workers == 2
        assert _refused({"workers": 3}).key == "workers"
        # Only the limit counts: a request does not bound a pod's CPU.
        resources = {"server": {"requests": {"cpu": "8"}}}
        assert _refused({"workers": 3, "resources": resources}).key == "workers"

    def test_the_core_count_matches_a_reference_on_random_quantities(self):
        """Seeded: any CPU limit the config accepts, in cores or millicores, allows exactly
        ceil(cores) workers (at least 1, at most 16), computed here with exact fractions."""
        generator = random.Random(20261206)
        for _ in range(400):
            whole = generator.randrange(0, 20)
            decimals = "".join(generator.choices("0123456789", k=generator.randrange(0, 4)))
            suffix = generator.choice(["", "m"])
            if suffix == "m":
                whole = generator.randrange(0, 20000)
            text = f"{whole}.{decimals}" if decimals else str(whole)
            quantity = Fraction(text) / (1000 if suffix == "m" else 1)
            cores = max(1, -(-quantity.numerator // quantity.denominator))
            resources = {"server": {"limits": {"cpu": text + suffix}}}
            allowed = min(cores, 16)
            assert kubernetes_settings({"workers": allowed, "resources": resources}).workers == (
                allowed
            )
            if cores < 16:
                error = _refused({"workers": cores + 1, "resources": resources})
                assert (error.key, f"the {cores} core(s)" in str(error)) == ("workers", True)

    @pytest.mark.parametrize("limit", ["1k", "1Ki", "2M"])
    def test_limits_in_thousands_of_cores_allow_every_worker_count(self, limit):
        resources = {"server": {"limits": {"cpu": limit}}}
        assert kubernetes_settings({"workers": 16, "resources": resources}).workers == 16


# --- the manifests ----------------------------------------------------------------------------


class TestManifests:
    def test_the_server_container_carries_the_flags_after_threads(self):
        _, deployment = server_manifests(
            endpoint=ENDPOINT,
            version=VERSIONS[42],
            role="candidate",
            release_number=4,
            replicas=3,
            settings=kubernetes_settings({"namespace": "models", "threads": 2, **SERVING}),
        )
        assert _args(deployment) == [
            "--model-dir", "/opt/model", "--model-name", "fraud", "--model-version", "adder:2",
            "--endpoint", "fraud", "--variant", "candidate", "--threads", "2",
            "--workers", "2", "--batch-max-rows", "32", "--batch-max-delay-us", "0",
            "--host", "0.0.0.0",  # noqa: S104
            "--port", "8080", "--drain-seconds", "20",
        ]  # fmt: skip

    @pytest.mark.parametrize(
        ("config", "flags"),
        [
            ({"workers": 2}, ["--workers", "2"]),
            ({"workers": 1}, []),
            ({"batch_max_rows": 64}, ["--batch-max-rows", "64"]),
            ({"batch_max_rows": 0}, []),
            (
                {"batch_max_rows": 64, "batch_max_delay_us": 200},
                ["--batch-max-rows", "64", "--batch-max-delay-us", "200"],
            ),
        ],
    )
    def test_each_setting_passes_its_own_flag_only_when_set(self, config, flags):
        _, deployment = server_manifests(
            endpoint=ENDPOINT,
            version=VERSIONS[41],
            role="primary",
            release_number=1,
            replicas=1,
            settings=kubernetes_settings(config),
        )
        arguments = _args(deployment)
        start = arguments.index("--threads") + 2
        assert arguments[start : arguments.index("--host")] == flags

    @pytest.mark.parametrize("traffic", ["gateway", "gateway-api"])
    def test_every_server_of_a_release_carries_them_and_the_gateway_does_not(self, traffic):
        config = {**(GATEWAY_API if traffic == "gateway-api" else {"namespace": "models"})}
        objects = _manifests({**config, **SERVING}, variants=SCALED)
        deployments = _by(objects, "Deployment")
        servers = {name: d for name, d in deployments.items() if name != "md-fraud-gateway"}
        # Fixed replicas, an autoscaler and a single pod: one template each, so every pod.
        assert sorted(servers) == ["md-fraud-v41", "md-fraud-v42", "md-fraud-v43"]
        for deployment in servers.values():
            arguments = _args(deployment)
            start = arguments.index("--threads") + 2
            assert arguments[start : start + len(FLAGS)] == FLAGS
        if traffic == "gateway":
            gateway = _args(deployments["md-fraud-gateway"])
            assert not {"--workers", "--batch-max-rows", "--batch-max-delay-us"} & set(gateway)
        for manifest in objects:
            validate_manifest(manifest)

    @pytest.mark.parametrize(
        ("name", "config", "variants"),
        [
            ("plain", None, WITH_SHADOW),
            ("scaled", SCALED_CONFIG, SCALED),
            ("gateway-api", GATEWAY_API, SCALED),
        ],
    )
    @pytest.mark.parametrize("explicit", [{}, {"workers": 1, "batch_max_rows": 0}])
    def test_without_the_settings_the_manifests_are_byte_for_byte_unchanged(
        self, name, config, variants, explicit
    ):
        if explicit:
            config = {**(config or {"namespace": "models"}), **explicit}
        text = json.dumps(_manifests(config, variants=variants), indent=None)
        assert hashlib.sha256(text.encode()).hexdigest() == BEFORE[name]


# --- through the API --------------------------------------------------------------------------

CREDENTIALS = {"kubeconfig_env": "MODELDECK_TARGET_ALPHA_KUBECONFIG"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("config", "key", "words"),
    [
        ({"workers": 17}, "workers", "from 1 to 16"),
        ({"workers": 3}, "workers", "exceeds the 2 core(s)"),
        (
            {"workers": 2, "resources": {"server": {"limits": {"cpu": "500m"}}}},
            "workers",
            'limits.cpu "500m"',
        ),
        ({"batch_max_rows": 20000}, "batch_max_rows", "from 0 to 10000"),
        ({"batch_max_delay_us": 0}, "batch_max_delay_us", "needs batch_max_rows above 0"),
    ],
)
def test_bad_serving_settings_are_a_readable_400_and_change_nothing(
    config, key, words, team, admin_member, api_for
):
    api = api_for(admin_member, team)
    payload = {
        "name": "cluster",
        "kind": TargetKind.KUBERNETES,
        "config": {**CREDENTIALS, **config},
    }
    created = api.post("/api/v1/targets/", payload, format="json")
    assert created.status_code == 400, created.content
    assert key in created.json()["error"] and words in created.json()["error"]
    assert created.json()["detail"] == {"config": key}
    assert not Target.objects.filter(name="cluster").exists()

    payload["config"] = {**CREDENTIALS, "threads": 2}
    assert api.post("/api/v1/targets/", payload, format="json").status_code == 201
    edited = api.patch(
        "/api/v1/targets/cluster/", {"config": {**CREDENTIALS, **config}}, format="json"
    )
    assert edited.status_code == 400, edited.content
    assert edited.json()["detail"] == {"config": key}
    assert Target.objects.get(name="cluster").config == {**CREDENTIALS, "threads": 2}
    assert not AuditEvent.objects.filter(action="target.update").exists()


@pytest.fixture
def team_kubeconfig(cluster, tmp_path, settings, team):
    """The fake cluster's kubeconfig in the team's own credentials folder (the API checks it)."""
    settings.TARGET_CREDENTIALS_DIR = tmp_path
    (tmp_path / team.name).mkdir()
    return cluster.write_kubeconfig(tmp_path / team.name / "kubeconfig")


@pytest.mark.django_db
def test_a_target_made_through_the_api_runs_every_server_pod_with_the_flags(
    cluster, team_kubeconfig, engine, versions, admin_member, deployer, team, api_for, make_actor
):
    admin = api_for(admin_member, team)
    config = {
        "kubeconfig": str(team_kubeconfig),
        "context": "fake",
        "namespace": NAMESPACE,
        "switch_timeout_seconds": 1,
        "build": {"registry": {"repository": REPOSITORY}},
    }
    created = admin.post(
        "/api/v1/targets/",
        {"name": "cluster", "kind": TargetKind.KUBERNETES, "config": {**config, **SERVING}},
        format="json",
    )
    assert created.status_code == 201, created.content
    assert created.json()["config"] == {**config, **SERVING}

    deployer_api = api_for(deployer, team)
    answer = deployer_api.post(
        "/api/v1/endpoints/",
        {"name": "fraud", "target": "cluster", "version": "adder:1"},
        format="json",
    )
    assert answer.status_code in (201, 202), answer.content
    endpoint = Endpoint.objects.get(name="fraud")
    assert reconcile_endpoint(endpoint_id=endpoint.pk) == "converged"
    # A second version, and three replicas of the first: each Deployment's one pod template
    # is what every replica runs.
    services.endpoint_deploy(
        actor=make_actor(deployer),
        endpoint=Endpoint.objects.get(pk=endpoint.pk),
        version="adder:2",
        weight=20,
    )
    assert reconcile_endpoint(endpoint_id=endpoint.pk) == "converged"
    scaled = deployer_api.post(
        "/api/v1/endpoints/fraud/scale/", {"version": "adder:1", "replicas": 3}, format="json"
    )
    assert scaled.status_code == 202, scaled.content
    assert reconcile_endpoint(endpoint_id=endpoint.pk) == "converged"

    servers = [f"md-fraud-v{versions[number].pk}" for number in (1, 2)]
    assert cluster.get("Deployment", servers[0], NAMESPACE)["spec"]["replicas"] == 3
    for name in servers:
        arguments = _args(cluster.get("Deployment", name, NAMESPACE))
        start = arguments.index("--threads") + 2
        assert arguments[start : start + len(FLAGS)] == FLAGS
    gateway = _args(cluster.get("Deployment", "md-fraud-gateway", NAMESPACE))
    assert "--workers" not in gateway

    release = scaled.json()["release"]
    export = deployer_api.get(f"/api/v1/endpoints/fraud/releases/{release}/manifests/")
    assert export.status_code == 200, export.content
    documents = [d for d in yaml.safe_load_all(export.content.decode()) if d]
    exported = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Deployment"}
    for name in servers:
        assert _args(exported[name]) == _args(cluster.get("Deployment", name, NAMESPACE))
