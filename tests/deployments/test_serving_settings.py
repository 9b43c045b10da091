"""Serving settings of local and docker targets (workers, batch_max_rows, batch_max_delay_us):
checked when a target is saved, passed to every version server as modeldeck-serve flags, and,
end to end on the local target, a version served by two processes that batch concurrent
requests."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from django.test import Client

from deployments import services, tasks
from deployments.models import (
    Endpoint,
    EndpointStatus,
    LocalProcess,
    LocalProcessRole,
    Target,
    TargetKind,
)
from deployments.targets.base import ServerSpec
from deployments.targets.local.driver import LocalDriver
from tests.deployments.test_docker_images import RecordingDriver
from tests.runtime.helpers import metric, run_coroutine, scrape

SERVING = {"workers": 2, "batch_max_rows": 32, "batch_max_delay_us": 0}


def api_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


# --- validation through the API ------------------------------------------------------------


BAD_SETTINGS = [
    ({"workers": 0}, "workers"),
    ({"workers": 17}, "workers"),
    ({"workers": "2"}, "workers"),
    ({"workers": True}, "workers"),
    ({"workers": 1.5}, "workers"),
    ({"batch_max_rows": -1}, "batch_max_rows"),
    ({"batch_max_rows": 10001}, "batch_max_rows"),
    ({"batch_max_rows": "32"}, "batch_max_rows"),
    ({"batch_max_rows": 32, "batch_max_delay_us": -1}, "batch_max_delay_us"),
    ({"batch_max_rows": 32, "batch_max_delay_us": 1_000_001}, "batch_max_delay_us"),
    ({"batch_max_rows": 32, "batch_max_delay_us": None}, "batch_max_delay_us"),
    # a delay without batching would do nothing
    ({"batch_max_delay_us": 0}, "batch_max_delay_us"),
    ({"batch_max_rows": 0, "batch_max_delay_us": 500}, "batch_max_delay_us"),
]


@pytest.mark.django_db
@pytest.mark.parametrize("kind", [TargetKind.LOCAL, TargetKind.DOCKER])
@pytest.mark.parametrize(("config", "key"), BAD_SETTINGS)
def test_bad_serving_settings_are_refused_by_name_and_nothing_changes(
    admin_member, kind, config, key
):
    client = api_client(admin_member)
    created = client.post(
        "/api/v1/targets/",
        {"name": "fast", "kind": kind, "config": config},
        content_type="application/json",
    )
    assert created.status_code == 400, created.content
    assert key in created.json()["error"]
    assert created.json()["detail"] == {"config": key}
    assert not Target.objects.filter(name="fast").exists()

    assert client.post(
        "/api/v1/targets/", {"name": "fast", "kind": kind}, content_type="application/json"
    ).status_code == 201  # fmt: skip
    edited = client.patch(
        "/api/v1/targets/fast/", {"config": config}, content_type="application/json"
    )
    assert edited.status_code == 400, edited.content
    assert key in edited.json()["error"]
    assert Target.objects.get(name="fast").config == {}


@pytest.mark.django_db
@pytest.mark.parametrize("kind", [TargetKind.LOCAL, TargetKind.DOCKER])
@pytest.mark.parametrize(
    "config",
    [
        SERVING,
        {"workers": 1, "batch_max_rows": 0},
        {"batch_max_rows": 10000, "batch_max_delay_us": 1_000_000},
        {"threads": 1, "batch_max_rows": 1},
    ],
)
def test_good_serving_settings_are_kept_as_given(admin_member, monkeypatch, kind, config):
    monkeypatch.setattr("deployments.targets.local.driver.os.cpu_count", lambda: 2)
    answer = api_client(admin_member).post(
        "/api/v1/targets/",
        {"name": "fast", "kind": kind, "config": config},
        content_type="application/json",
    )
    assert answer.status_code == 201, answer.content
    assert answer.json()["config"] == config
    assert Target.objects.get(name="fast").config == config


@pytest.mark.django_db
def test_local_workers_are_refused_above_the_cores_of_the_machine(admin_member, monkeypatch):
    client = api_client(admin_member)
    cores = os.cpu_count() or 1
    if cores < 16:  # the machine's own count, unpatched
        answer = client.post(
            "/api/v1/targets/",
            {"name": "wide", "kind": "local", "config": {"workers": cores + 1}},
            content_type="application/json",
        )
        assert answer.status_code == 400, answer.content
        assert answer.json()["error"] == (
            f"workers must be at most the {cores} cores of this machine (got {cores + 1})."
        )
    monkeypatch.setattr("deployments.targets.local.driver.os.cpu_count", lambda: 4)
    over = client.post(
        "/api/v1/targets/",
        {"name": "wide", "kind": "local", "config": {"workers": 5}},
        content_type="application/json",
    )
    assert over.status_code == 400, over.content
    assert over.json()["detail"] == {"config": "workers"}
    assert not Target.objects.filter(name="wide").exists()
    at = client.post(
        "/api/v1/targets/",
        {"name": "wide", "kind": "local", "config": {"workers": 4}},
        content_type="application/json",
    )
    assert at.status_code == 201, at.content


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("cpus", "most"), [(0.5, 1), (1, 1), (1.5, 2), (2, 2), (2.01, 3), (16, 16), (64, 16)]
)
def test_docker_workers_are_refused_above_the_cores_cpus_gives(admin_member, cpus, most):
    """workers <= ceil(cpus), and never above 16."""
    client = api_client(admin_member)
    over = client.post(
        "/api/v1/targets/",
        {"name": "boxed", "kind": "docker", "config": {"cpus": cpus, "workers": most + 1}},
        content_type="application/json",
    )
    assert over.status_code == 400, over.content
    assert over.json()["error"].startswith("Docker target setting workers: must be")
    assert over.json()["detail"] == {"config": "workers"}
    assert not Target.objects.filter(name="boxed").exists()
    at = client.post(
        "/api/v1/targets/",
        {"name": "boxed", "kind": "docker", "config": {"cpus": cpus, "workers": most}},
        content_type="application/json",
    )
    assert at.status_code == 201, at.content


@pytest.mark.django_db
def test_docker_messages_say_what_to_change(admin_member):
    client = api_client(admin_member)
    cases = {
        "Docker target setting workers: must be at most 2, the cores cpus (1.5) gives a "
        "container.": {"cpus": 1.5, "workers": 3},
        "Docker target setting batch_max_delay_us: needs batch_max_rows above 0 (without "
        "batching it does nothing).": {"batch_max_delay_us": 100},
        "Docker target setting batch_max_rows: must be a whole number from 0 to 10000.": {
            "batch_max_rows": 20000
        },
    }
    for message, config in cases.items():
        answer = client.post(
            "/api/v1/targets/",
            {"name": "boxed", "kind": "docker", "config": config},
            content_type="application/json",
        )
        assert (answer.status_code, answer.json()["error"]) == (400, message)


# --- the command line each driver builds ------------------------------------------------------


def _spec(endpoint: Endpoint, replicas: int = 1) -> ServerSpec:
    return ServerSpec(
        endpoint_id=endpoint.pk, endpoint_name=endpoint.name, version_id=11, version="adder:3",
        model_name="adder", version_number=3, release_number=2, role="candidate",
        replicas=replicas,
    )  # fmt: skip


class RecordingLocalDriver(LocalDriver):
    """The local driver with process start replaced by a recorder of its arguments."""

    def __init__(self, target) -> None:
        super().__init__(target)
        self.spawned: list[list[str]] = []

    def _spawn(self, row, arguments, environment):
        self.spawned.append(arguments)
        return None


def _local_commands(team, tmp_path: Path, settings, config: dict) -> list[list[str]]:
    settings.RUNTIME_DIR = str(tmp_path)
    target = Target.objects.create(team=team, name="cmd", kind=TargetKind.LOCAL, config=config)
    endpoint = Endpoint(pk=42, name="shop", team=team, target=target)
    driver = RecordingLocalDriver(target)
    spec = _spec(endpoint, replicas=2)
    folder = driver.model_folder(spec=spec)
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"\0" * 100)
    driver.ensure_server(endpoint=endpoint, spec=spec)
    return driver.spawned


def _local_command(folder: Path, flags: list[str]) -> list[str]:
    return [
        "serve", "--model-dir", str(folder), "--model-name", "shop", "--model-version",
        "adder:3", "--variant", "candidate", "--endpoint", "shop", "--threads", "1", *flags,
        "--memory-limit-mb", "2048", "--drain-seconds", "8",
    ]  # fmt: skip


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("config", "flags"),
    [
        ({}, []),
        # defaults given explicitly change nothing either
        ({"workers": 1, "batch_max_rows": 0}, []),
        (SERVING, ["--workers", "2", "--batch-max-rows", "32", "--batch-max-delay-us", "0"]),
        ({"batch_max_rows": 64}, ["--batch-max-rows", "64"]),
        ({"workers": 2}, ["--workers", "2"]),
    ],
)
def test_the_local_command_line_carries_the_settings_for_every_replica(
    team, tmp_path, settings, monkeypatch, config, flags
):
    monkeypatch.setattr("deployments.targets.local.driver.os.cpu_count", lambda: 2)
    config = LocalDriver.validate_config({"threads": 1, **config})
    commands = _local_commands(team, tmp_path, settings, config)
    folder = tmp_path / "endpoint-42" / "v11"
    assert commands == [_local_command(folder, flags)] * 2


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("config", "flags"),
    [
        ({}, []),
        ({"workers": 1, "batch_max_rows": 0}, []),
        (
            {**SERVING, "cpus": 2},
            ["--workers", "2", "--batch-max-rows", "32", "--batch-max-delay-us", "0"],
        ),
        ({"batch_max_rows": 64}, ["--batch-max-rows", "64"]),
        ({"workers": 3, "cpus": 2.5}, ["--workers", "3"]),
    ],
)
def test_the_docker_container_command_carries_the_settings_for_every_replica(team, config, flags):
    target = Target.objects.create(
        team=team, name="docker-cmd", kind=TargetKind.DOCKER,
        config={"threads": 2, **config},
    )  # fmt: skip
    endpoint = Endpoint(pk=42, name="shop", team=team, target=target)
    driver = RecordingDriver(target)
    driver.ensure_server(endpoint=endpoint, spec=_spec(endpoint, replicas=2))
    expected = [
        "modeldeck-serve", "--model-dir", "/opt/model", "--model-name", "shop",
        "--model-version", "adder:3", "--variant", "candidate", "--endpoint", "shop",
        "--threads", "2", *flags,
        "--host", "0.0.0.0", "--port", "8080", "--drain-seconds", "8",  # noqa: S104
    ]  # fmt: skip
    assert [started["command"] for started in driver.started] == [expected, expected]
    # The gateway is no version server: it never gets these flags.
    driver.ensure_gateway(endpoint=endpoint)
    assert not {"--workers", "--batch-max-rows"} & set(driver.started[-1]["command"])


# --- end to end on the local target ------------------------------------------------------------


def _children(pid: int) -> list[int]:
    """The child processes of `pid` (Linux /proc)."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(child) for child in (task / "children").read_text().split()]
    return children


def _command_line(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    return [part.decode() for part in raw.split(b"\0") if part]


async def _burst(url: str, name: str, count: int) -> list[tuple[int, float]]:
    """`count` requests x = 0 .. count-1 written at once on `count` fresh connections (all
    opened first), then every answer read: [(status, y)]."""
    parts = urlsplit(url)
    streams = [await asyncio.open_connection(parts.hostname, parts.port) for _ in range(count)]
    try:
        for index, (_, writer) in enumerate(streams):
            body = json.dumps(
                {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [index]}]}
            ).encode()
            head = (
                f"POST /v2/models/{name}/infer HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            writer.write(head.encode() + body)
        return await asyncio.gather(*(_answer(reader) for reader, _ in streams))
    finally:
        for _, writer in streams:
            writer.close()


async def _answer(reader: asyncio.StreamReader) -> tuple[int, float]:
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)).decode("latin-1")
    status = int(head.split(" ", 2)[1])
    lengths = [
        int(line.split(":", 1)[1])
        for line in head.split("\r\n")[1:]
        if line.lower().startswith("content-length:")
    ]
    assert len(lengths) == 1, head
    answer = json.loads(await reader.readexactly(lengths[0]))
    return status, answer["outputs"][0]["data"][0] if status == 200 else answer


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_local_version_runs_as_two_workers_that_batch_concurrent_requests(
    versions, admin_member, scientist, make_actor, runtime_processes
):
    if (os.cpu_count() or 1) < 2:
        pytest.skip("two workers need two cores on the local target")
    created = api_client(admin_member).post(
        "/api/v1/targets/",
        {"name": "fast-local", "kind": "local", "environment": "dev",
         "config": {"threads": 1, **SERVING}},
        content_type="application/json",
    )  # fmt: skip
    assert created.status_code == 201, created.content
    target = Target.objects.get(name="fast-local")
    endpoint = services.endpoint_create(
        actor=make_actor(scientist), name="batched", target=target, version="adder:1"
    )
    assert tasks.reconcile_endpoint(endpoint.pk) == "converged"
    endpoint.refresh_from_db()
    assert endpoint.status == EndpointStatus.LIVE

    # Inference through the endpoint answers correctly (adder:1 answers x + 1).
    answer = httpx.post(
        f"{endpoint.url}/v2/models/batched/infer",
        json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [10.0]}]},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == [11.0]

    # The started process carries the flags and has one child: the second worker.
    row = LocalProcess.objects.get(endpoint_id=endpoint.pk, role=LocalProcessRole.SERVER)
    command = _command_line(row.pid)
    flags = ["--workers", "2", "--batch-max-rows", "32", "--batch-max-delay-us", "0"]
    assert command[command.index("--threads") + 2 :][: len(flags)] == flags
    children = _children(row.pid)
    assert len(children) == 1, children
    child = _command_line(children[0])
    assert child[1:4] == ["-m", "modeldeck_runtime", "serve"]
    assert child[4:] == command[6:]  # the same arguments as the first, after "serve"

    # A burst on many connections through the endpoint: every caller gets its own answer, and
    # the version's metrics (summed over both workers) count fewer onnxruntime calls than
    # successful requests. Scheduling decides how many arrive in one event-loop turn, so a
    # few bursts are allowed.
    server = f"http://127.0.0.1:{row.port}"
    calls = successes = 0.0
    for _attempt in range(5):
        answers = run_coroutine(_burst(endpoint.url, "batched", 48))
        assert answers == [(200, float(x + 1)) for x in range(48)]
        samples = scrape(server)
        successes = metric(samples, "modeldeck_requests_total", outcome="success")
        calls = metric(samples, "modeldeck_inference_duration_seconds_count")
        if calls < successes:
            break
    assert successes >= 49
    assert calls < successes, f"{calls} onnxruntime calls for {successes} requests: no batch"
