"""A running build's heartbeat, and what happens to a build whose heartbeat stopped (no engine
needed: the Docker-tier test in test_build_faults.py kills a real worker mid-build)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from deployments.models import Build, BuildStatus, Target, TargetKind
from deployments.targets.docker import images
from tests.faults.processes import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.fault]

BASE_IMAGE = "modeldeck/base:bookworm"


@pytest.fixture
def docker_target(team):
    return Target.objects.create(
        team=team, name="docker-nowhere", kind=TargetKind.DOCKER,
        config={"docker_host": "tcp://127.0.0.1:9"},
    )  # fmt: skip


def running_build(version, target, *, silent_for: float) -> Build:
    build = Build.objects.create(
        version=version, target=target, base_image=BASE_IMAGE, status=BuildStatus.RUNNING
    )
    Build.objects.filter(pk=build.pk).update(
        updated_at=timezone.now() - timedelta(seconds=silent_for)
    )
    return build


def test_a_build_without_a_heartbeat_is_replaced_at_once(versions, docker_target, settings):
    settings.DEPLOYMENTS_BUILD_STALE_SECONDS = 60
    lost = running_build(versions[1], docker_target, silent_for=61)
    replacement = images.build_request(version=versions[1], target=docker_target)
    lost.refresh_from_db()
    assert (lost.status, replacement.status) == (BuildStatus.FAILED, BuildStatus.PENDING)
    assert lost.status_reason == "The build stopped making progress (its worker was lost)."
    # The lost build is no recent failure that holds the version back: the next ask gets the
    # replacement again.
    assert images.build_request(version=versions[1], target=docker_target).pk == replacement.pk


def test_a_build_with_a_recent_heartbeat_is_waited_for(versions, docker_target, settings):
    settings.DEPLOYMENTS_BUILD_STALE_SECONDS = 60
    running = running_build(versions[1], docker_target, silent_for=30)
    assert images.build_request(version=versions[1], target=docker_target).pk == running.pk
    running.refresh_from_db()
    assert running.status == BuildStatus.RUNNING


def test_the_heartbeat_moves_a_running_build_until_stopped(versions, docker_target, settings):
    settings.DEPLOYMENTS_BUILD_STALE_SECONDS = 2  # a beat every 0.5 s
    build = running_build(versions[1], docker_target, silent_for=30)
    before = Build.objects.get(pk=build.pk).updated_at
    heartbeat = images._Heartbeat(build.pk)
    heartbeat.start()
    try:
        wait_for(
            lambda: Build.objects.get(pk=build.pk).updated_at > before + timedelta(seconds=29),
            seconds=5,
            what="a heartbeat",
        )
    finally:
        heartbeat.stop()
    assert not heartbeat.is_alive()
    # A finished build is left alone.
    Build.objects.filter(pk=build.pk).update(status=BuildStatus.SUCCEEDED, updated_at=before)
    heartbeat = images._Heartbeat(build.pk)
    heartbeat.start()
    heartbeat.stopped.wait(1.2)
    heartbeat.stop()
    assert Build.objects.get(pk=build.pk).updated_at == before
