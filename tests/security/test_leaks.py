"""Nothing leaks: serving processes inherit only an allow-listed environment, access logs hold no
query strings, user-facing reasons name no server folder, var/ and the database are private."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from django.conf import settings as django_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.redaction import without_server_paths
from deployments import services, tasks
from deployments.models import LocalProcess
from deployments.targets.local import driver as local
from tests.conftest import actor_for

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
variable_names = st.one_of(
    st.from_regex(r"MODELDECK_TARGET_[A-Z]{1,8}_[A-Z]{1,12}", fullmatch=True),
    st.sampled_from(["METRICS_TOKEN", "EMAIL_HOST_PASSWORD", "SECRET_KEY", "DATABASE_URL"]),
    st.from_regex(r"[A-Z][A-Z0-9_]{2,20}", fullmatch=True),
)


@settings(max_examples=50, suppress_health_check=FIXTURES, deadline=None)
@given(names=st.lists(variable_names, min_size=1, max_size=8, unique=True))
def test_serving_processes_get_only_allow_listed_variables(monkeypatch, names):
    names = [name for name in names if name not in local.RUNTIME_ENVIRONMENT]
    for name in names:
        monkeypatch.setenv(name, f"secret-of-{name}")
    environment = local._runtime_environment()
    assert set(environment) <= local.RUNTIME_ENVIRONMENT | {
        key for key in environment if key.startswith("LC_")
    }
    assert not any(value.startswith("secret-of-") for value in environment.values())
    for name in names:
        monkeypatch.delenv(name)


def _environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_a_live_endpoints_processes_hold_no_secret_of_the_worker(
    versions, dev_target, deployer, runtime_processes, monkeypatch
):
    secrets = {
        "MODELDECK_TARGET_BRAVO_KUBECONFIG": "/srv/bravo/kubeconfig",
        "METRICS_TOKEN": "metrics-token-value",
        "EMAIL_HOST_PASSWORD": "mail-password-value",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    endpoint = services.endpoint_create(
        actor=actor_for(deployer), name="sealed", target=dev_target, version="adder:1"
    )
    assert tasks.reconcile_endpoint(endpoint.pk) == "converged"
    pids = list(LocalProcess.objects.filter(endpoint_id=endpoint.pk).values_list("pid", flat=True))
    assert len(pids) == 2
    for pid in pids:
        environment = _environ_of(pid)
        assert not set(secrets) & set(environment)
        assert not set(secrets.values()) & set(environment.values())
    gateway = LocalProcess.objects.get(endpoint_id=endpoint.pk, role="gateway")
    # The gateway's own token is the one secret it must have.
    endpoint.refresh_from_db()
    assert _environ_of(gateway.pid)["MODELDECK_GATEWAY_ADMIN_TOKEN"] == endpoint.gateway_token


def _free_port() -> int:
    low, high = os.environ.get("LOCAL_TARGET_PORT_RANGE", "25000-25999").split("-")
    for port in range(int(high), int(low), -1):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError("no free port")


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory):
    """The web server as dev.py and the image start it: gunicorn from the checkout."""
    folder = tmp_path_factory.mktemp("gunicorn")
    log = folder / "access.log"
    port = _free_port()
    environment = {
        **os.environ,
        "DEBUG": "true",
        "MODELDECK_VAR_DIR": str(folder / "var"),
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
    }
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("gunicorn")),
            "config.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--access-logfile",
            str(log),
        ],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/healthz", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.2)
    yield url, log
    process.terminate()
    process.wait(timeout=30)


tokens = st.from_regex(r"[A-Za-z0-9_-]{16,48}", fullmatch=True)


@settings(max_examples=25, suppress_health_check=FIXTURES, deadline=None)
@given(
    token=tokens,
    name=st.sampled_from(["token", "access_token", "key", "api_key", "code", "x"]),
    path=st.sampled_from(["/healthz", "/api/v1/endpoints/", "/accounts/login/", "/nowhere"]),
)
def test_access_logs_hold_paths_but_never_query_strings_or_referrers(gunicorn, token, name, path):
    url, log = gunicorn
    lines = len(log.read_text().splitlines())
    httpx.get(
        f"{url}{path}",
        params={name: token},
        headers={"Referer": f"{url}/back?{name}={token}"},
        timeout=10,
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(log.read_text().splitlines()) == lines:
        time.sleep(0.05)
    text = log.read_text()
    assert f'"GET {path} HTTP/1.1"' in text.splitlines()[lines]
    assert token not in text


server_roots = st.sampled_from(["temp", "var", "checkout", "artifacts", "python"])
path_parts = st.lists(st.from_regex(r"[A-Za-z0-9._-]{1,12}", fullmatch=True), max_size=4)


def _root(kind: str) -> str:
    import tempfile

    return {
        "temp": tempfile.gettempdir(),
        "var": str(django_settings.VAR_DIR),
        "checkout": str(django_settings.BASE_DIR),
        "artifacts": str(django_settings.ARTIFACT_ROOT),
        "python": sys.prefix,
    }[kind]


@settings(max_examples=100, deadline=None)
@given(
    kind=server_roots,
    parts=path_parts,
    before=st.sampled_from(["", "No such file or directory: '", "Load model from ", "at ("]),
    after=st.sampled_from(["", "'", " failed: bad", ")."]),
)
def test_reasons_never_name_a_server_folder(kind, parts, before, after):
    root = _root(kind)
    path = "/".join([root, *parts])
    message = without_server_paths(f"{before}{path}{after}")
    assert root not in message
    assert message.startswith(before) and message.endswith(after)
    if parts:
        assert f"…/{parts[-1]}" in message


@pytest.mark.django_db(transaction=True)
def test_a_validation_reason_about_an_unreadable_file_names_no_server_path(
    versions, settings, tmp_path
):
    from registry.models import Artifact, ArtifactKind, ModelVersion, VersionStatus
    from registry.storage import local_path
    from registry.tasks import validate_version

    version = versions[1]
    artifact = Artifact.objects.get(version=version, kind=ArtifactKind.MODEL)
    storage_path = Path(local_path(artifact))
    assert stat.S_IMODE(storage_path.stat().st_mode) == 0o600  # stored private
    storage_path.unlink()
    ModelVersion.objects.filter(pk=version.pk).update(status=VersionStatus.PENDING)
    validate_version(version.pk)
    version.refresh_from_db()
    assert version.status == VersionStatus.INVALID
    assert "cannot be read" in version.status_reason
    assert str(storage_path.parent) not in version.status_reason
    assert "/tmp/" not in version.status_reason


def test_var_and_the_sqlite_file_are_private_to_this_user(tmp_path):
    var = tmp_path / "fresh-var"
    code = (
        "import django; django.setup(); from django.db import connection; "
        "connection.ensure_connection()"
    )
    environment = {
        **os.environ,
        "DEBUG": "true",
        "MODELDECK_VAR_DIR": str(var),
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "DATABASE_URL": "",
    }
    environment.pop("DATABASE_URL")
    subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=environment,
        check=True,
        preexec_fn=lambda: os.umask(0o022),
    )
    assert stat.S_IMODE(var.stat().st_mode) == 0o700
    database = var / "modeldeck.sqlite3"
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    # An existing, too open var/ is closed again on the next start.
    var.chmod(0o755)
    database.chmod(0o644)
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environment, check=True)
    assert stat.S_IMODE(var.stat().st_mode) == 0o700
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
