"""Edge fleets in-process: enrollment, device API bad input, signed desired state, artifact
download, heartbeat summaries, rollouts (waves, cohorts, abort, cancel, retry) and the pages."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest
from modeldeck_runtime.agent import AgentError, verify_manifest
from rest_framework.test import APIClient

from accounts.models import AuditEvent
from deployments import reconciler
from deployments.models import Environment, ReleaseReason, Target, TargetKind
from deployments.services import endpoint_create
from edge import services as edge
from edge.models import EdgeDevice, EdgeRollout, RolloutDeviceState, RolloutStatus
from monitoring.models import MetricPoint
from registry.models import RegisteredModel

pytestmark = pytest.mark.django_db


def make_fleet(team, name="cams", system=None) -> Target:
    return Target.objects.create(
        team=team, name=name, kind=TargetKind.EDGE, environment=Environment.DEV
    )


@pytest.fixture
def fleet(team):
    return make_fleet(team)


@pytest.fixture
def fleet_endpoint(fleet, versions, system):
    endpoint = endpoint_create(actor=system, name="cams-serving", target=fleet, version=versions[1])
    assert reconciler.reconcile_endpoint(endpoint_id=endpoint.pk) == "converged"
    return endpoint


def enroll(fleet, name, labels=None, system=None):
    from accounts.actor import Actor

    _code, plain = edge.enrollment_code_create(
        actor=Actor.system("tests"), target=fleet, labels=labels
    )
    device, token, key = edge.device_enroll(code=plain, name=name)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return device, client, bytes.fromhex(key)


def beat(client, **state):
    body = {"agent_version": "test", "state": {"health": "ok", **state}, "summaries": []}
    response = client.post("/api/v1/edge/heartbeat/", body, format="json")
    assert response.status_code == 200, response.content
    return response


def report_current(client, device):
    """What an agent says after applying its manifest."""
    device.refresh_from_db()
    return beat(
        client,
        current_version=device.desired_version.reference,
        applied_sequence=device.desired_sequence,
    )


def report_failed(client, device, previous):
    device.refresh_from_db()
    return beat(
        client,
        health="degraded",
        current_version=previous,
        failed_version=device.desired_version.reference,
        failed_sequence=device.desired_sequence,
        reason="smoke inference answered NaN",
    )


# --- enrollment and tokens ----------------------------------------------------------------------


def test_enrollment_code_needs_a_deployer_and_is_one_time(
    fleet, fleet_endpoint, deployer, scientist, outsider, api_for, team, other_team
):
    path = f"/api/v1/targets/{fleet.name}/enrollment-codes/"
    assert api_for(scientist, team).post(path, {}, format="json").status_code == 403
    assert api_for(outsider, other_team).post(path, {}, format="json").status_code == 404
    response = api_for(deployer, team).post(path, {"labels": {"site": "a"}}, format="json")
    assert response.status_code == 201
    code = response.json()["code"]
    anonymous = APIClient()
    enrolled = anonymous.post("/api/v1/edge/enroll/", {"code": code, "name": "cam-1"}, "json")
    assert enrolled.status_code == 201
    token = enrolled.json()["token"]
    again = anonymous.post("/api/v1/edge/enroll/", {"code": code, "name": "cam-2"}, "json")
    assert again.status_code == 400
    assert "not valid" in again.json()["error"]
    device = EdgeDevice.objects.get()
    assert device.name == "cam-1" and device.labels == {"site": "a"}
    assert device.token_digest == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(EdgeDevice.objects.values().get())
    assert device.desired_version.reference == "adder:1"
    assert AuditEvent.objects.filter(action="edge.device.enroll").count() == 1


def test_enroll_bad_input_is_400(fleet):
    client = APIClient()
    assert client.post("/api/v1/edge/enroll/", {"code": "x"}, format="json").status_code == 400
    assert client.post("/api/v1/edge/enroll/", [], format="json").status_code == 400
    bad_name = client.post("/api/v1/edge/enroll/", {"code": "x", "name": "../x"}, format="json")
    assert bad_name.status_code == 400
    assert EdgeDevice.objects.count() == 0


def test_wrong_or_revoked_token_is_401(fleet, fleet_endpoint, deployer, team, api_for):
    device, client, _key = enroll(fleet, "cam-1")
    assert client.get("/api/v1/edge/desired/").status_code == 200
    assert APIClient().get("/api/v1/edge/desired/").status_code == 401
    wrong = APIClient()
    wrong.credentials(HTTP_AUTHORIZATION="Bearer edg_aaaaaaaaaaaa_" + "b" * 43)
    assert wrong.get("/api/v1/edge/desired/").status_code == 401
    # A person's API token is not a device token.
    assert api_for(deployer, team).get("/api/v1/edge/desired/").status_code == 401
    revoked = api_for(deployer, team).post(
        f"/api/v1/targets/{fleet.name}/devices/{device.name}/revoke/"
    )
    assert revoked.status_code == 200
    assert client.get("/api/v1/edge/desired/").status_code == 401
    assert client.post("/api/v1/edge/heartbeat/", {"state": {}}, format="json").status_code == 401
    assert EdgeDevice.objects.get().last_seen_at is None


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"state": "ok"},
        {"state": {"health": "splendid"}},
        {"state": {"applied_sequence": -1}},
        {"state": {"current_version": "x" * 500}},
        {"state": {}, "summaries": {"a": 1}},
        {"state": {}, "summaries": [{"sequence": 1, "at": "yesterday", "version": "adder:1"}]},
        {"state": {}, "summaries": [{"sequence": 1, "at": "2025-01-01T00:00:00+00:00"}]},
        {
            "state": {},
            "summaries": [
                {
                    "sequence": 1,
                    "at": "2025-01-01T00:00:00+00:00",
                    "version": "adder:1",
                    "latency": {"bounds": [1, 2], "counts": [1]},
                }
            ],
        },
        {"state": {}, "summaries": [{"sequence": 1}] * 101},
    ],
)
def test_malformed_heartbeat_is_400_and_changes_nothing(fleet, fleet_endpoint, body):
    device, client, _key = enroll(fleet, "cam-1")
    response = client.post("/api/v1/edge/heartbeat/", body, format="json")
    assert response.status_code == 400
    assert response.json()["error"]
    device.refresh_from_db()
    assert device.last_seen_at is None and device.summary_sequence == 0
    assert MetricPoint.objects.count() == 0


def test_desired_state_is_signed_for_the_device_and_conditional(fleet, fleet_endpoint):
    device, client, key = enroll(fleet, "cam-1")
    response = client.get("/api/v1/edge/desired/")
    assert response.status_code == 200
    manifest = verify_manifest(response.json(), key, "cam-1")
    assert manifest["version"] == "adder:1" and manifest["sequence"] == 1
    assert manifest["artifact"] == f"/api/v1/edge/artifacts/{device.desired_version_id}/"
    with pytest.raises(AgentError, match="signature"):
        verify_manifest(response.json(), b"another device's key", "cam-1")
    tampered = response.json()
    tampered["manifest"]["sha256"] = "0" * 64
    with pytest.raises(AgentError, match="signature"):
        verify_manifest(tampered, key, "cam-1")
    etag = response["ETag"]
    assert client.get("/api/v1/edge/desired/", HTTP_IF_NONE_MATCH=etag).status_code == 304


def test_artifact_download_supports_ranges_and_only_desired_versions(
    fleet, fleet_endpoint, versions
):
    _device, client, _key = enroll(fleet, "cam-1")
    artifact = versions[1].artifacts.get()
    whole = client.get(f"/api/v1/edge/artifacts/{versions[1].pk}/")
    assert whole.status_code == 200
    content = b"".join(whole.streaming_content)
    assert hashlib.sha256(content).hexdigest() == artifact.sha256
    part = client.get(f"/api/v1/edge/artifacts/{versions[1].pk}/", HTTP_RANGE="bytes=10-")
    assert part.status_code == 206
    assert b"".join(part.streaming_content) == content[10:]
    assert part["Content-Range"] == f"bytes 10-{len(content) - 1}/{len(content)}"
    bad = client.get(f"/api/v1/edge/artifacts/{versions[1].pk}/", HTTP_RANGE="bytes=99999-")
    assert bad.status_code == 416
    assert client.get(f"/api/v1/edge/artifacts/{versions[2].pk}/").status_code == 404


def test_a_device_of_another_fleet_sees_nothing(
    fleet, fleet_endpoint, versions, other_team, system
):
    other = make_fleet(other_team, "other-fleet")
    _device, client, _key = enroll(other, "stranger")
    desired = client.get("/api/v1/edge/desired/").json()["manifest"]
    assert desired["version"] is None and desired["fleet"] == "other-fleet"
    assert client.get(f"/api/v1/edge/artifacts/{versions[1].pk}/").status_code == 404
    summary = {
        "sequence": 1,
        "at": datetime.now(UTC).isoformat(),
        "version": "adder:1",
        "requests": 3,
        "successes": 3,
    }
    response = client.post(
        "/api/v1/edge/heartbeat/", {"state": {}, "summaries": [summary]}, format="json"
    )
    assert response.status_code == 200 and response.json()["summaries_stored"] == 0
    assert MetricPoint.objects.count() == 0


def test_heartbeat_summaries_feed_metric_points_once(fleet, fleet_endpoint, versions):
    _device, client, _key = enroll(fleet, "cam-1")
    summary = {
        "sequence": 1,
        "at": datetime.now(UTC).isoformat(),
        "version": "adder:1",
        "requests": 5,
        "successes": 4,
        "client_errors": 1,
        "latency_sum": 0.01,
        "latency": {"bounds": [0.001, 0.01], "counts": [3, 2, 0]},
        "features": {"x": {"bounds": [0.0, 1.0], "counts": [0, 5, 0]}},
    }
    body = {"state": {"health": "ok"}, "summaries": [summary]}
    for _ in range(2):  # the second is a re-send after a lost response
        assert client.post("/api/v1/edge/heartbeat/", body, format="json").status_code == 200
    point = MetricPoint.objects.get()
    assert point.endpoint_id == fleet_endpoint.pk and point.version_id == versions[1].pk
    assert (point.requests, point.successes, point.client_errors) == (5, 4, 1)
    assert point.latency == {"bounds": [0.001, 0.01], "counts": [3, 2, 0]}
    assert point.features == {"x": {"bounds": [0.0, 1.0], "counts": [0, 5, 0]}}
    assert point.variant == "edge"


# --- rollouts -----------------------------------------------------------------------------------


def test_rollout_goes_wave_by_wave_then_aborts_past_the_threshold(
    fleet, fleet_endpoint, versions, deployer, team, api_for
):
    devices = [enroll(fleet, f"cam-{n}") for n in range(4)]
    for device, client, _key in devices:
        report_current(client, device)
    api = api_for(deployer, team)
    response = api.post(
        f"/api/v1/targets/{fleet.name}/rollouts/",
        {"version": "adder:2", "waves": [{"percent": 25}, {"percent": 50}, {"percent": 100}],
         "max_failure_percent": 40, "min_reported": 2},
        format="json",
    )  # fmt: skip
    assert response.status_code == 201, response.content
    rollout = EdgeRollout.objects.get(pk=response.json()["id"])
    assert rollout.current_wave == 0
    first = rollout.assignments.get()
    assert first.device.name == "cam-0" and first.device.desired_version == versions[2]
    # The other devices keep adder:1 until their wave.
    assert EdgeDevice.objects.get(name="cam-3").desired_version == versions[1]
    device, client, _ = devices[0]
    report_current(client, device)
    rollout.refresh_from_db()
    assert rollout.current_wave == 1
    assert rollout.assignments.get(wave=1).device.name == "cam-1"
    # cam-1 fails its smoke test and rolls back locally: 1 of 2 reported failed (50 % > 40 %).
    device, client, _ = devices[1]
    report_failed(client, device, previous="adder:1")
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.ABORTED
    assert "1 of 2 devices failed" in rollout.status_reason
    states = dict(rollout.assignments.values_list("device__name", "state"))
    assert states == {"cam-0": RolloutDeviceState.REVERTED, "cam-1": RolloutDeviceState.FAILED}
    cam0 = EdgeDevice.objects.get(name="cam-0")
    assert cam0.desired_version == versions[1] and cam0.desired_sequence == 3
    assert not EdgeDevice.objects.filter(name="cam-3", desired_sequence__gt=1).exists()
    fleet_endpoint.refresh_from_db()
    release = fleet_endpoint.desired_release
    assert release.reason == ReleaseReason.ROLLBACK and release.variants[0]["version"] == "adder:1"
    assert rollout.abort_release_id == release.pk
    assert AuditEvent.objects.filter(action="edge.rollout.abort").count() == 1
    # The reconciler accepts the abort release as published and starts no new rollout.
    assert reconciler.reconcile_endpoint(endpoint_id=fleet_endpoint.pk) == "converged"
    assert EdgeRollout.objects.count() == 2  # release 1's and this one


def test_label_cohorts_and_rate_limit(fleet, fleet_endpoint, versions, system):
    devices = {
        name: enroll(fleet, name, labels={"site": site})
        for name, site in (("a-1", "a"), ("a-2", "a"), ("b-1", "b"))
    }
    rollout = edge.edge_rollout_create(
        actor=system,
        target=fleet,
        version="adder:2",
        waves=[{"labels": {"site": "b"}}, {"labels": {"site": "a"}}],
        wave_interval_seconds=3600,
    )
    assert list(rollout.assignments.values_list("device__name", flat=True)) == ["b-1"]
    device, client, _ = devices["b-1"]
    report_current(client, device)
    rollout.refresh_from_db()
    # Wave 1 reported, but the rate limit holds wave 2 back.
    assert rollout.current_wave == 0 and rollout.status == RolloutStatus.RUNNING
    EdgeRollout.objects.filter(pk=rollout.pk).update(
        wave_started_at=rollout.wave_started_at.replace(year=2000)
    )
    assert edge.edge_rollouts_advance_all() == 1
    rollout.refresh_from_db()
    assert rollout.current_wave == 1
    assert set(rollout.assignments.filter(wave=1).values_list("device__name", flat=True)) == {
        "a-1",
        "a-2",
    }
    for name in ("a-1", "a-2"):
        device, client, _ = devices[name]
        report_current(client, device)
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.SUCCEEDED


def test_cancel_and_retry_are_idempotent_and_never_block(
    fleet, fleet_endpoint, versions, deployer, team, api_for
):
    for n in range(2):
        enroll(fleet, f"cam-{n}")
    api = api_for(deployer, team)
    created = api.post(
        f"/api/v1/targets/{fleet.name}/rollouts/",
        {"version": "adder:2", "waves": [{"percent": 50}, {"percent": 100}]},
        format="json",
    ).json()
    for _ in range(2):
        response = api.post(f"/api/v1/edge/rollouts/{created['id']}/cancel/")
        assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert AuditEvent.objects.filter(action="edge.rollout.cancel").count() == 1
    first = api.post(f"/api/v1/edge/rollouts/{created['id']}/retry/").json()
    second = api.post(f"/api/v1/edge/rollouts/{created['id']}/retry/").json()
    assert first["id"] == second["id"] != created["id"]
    assert first["status"] == "running" and first["retry_of"] == created["id"]
    # A new rollout supersedes the running one instead of waiting for it.
    newer = api.post(
        f"/api/v1/targets/{fleet.name}/rollouts/", {"version": "adder:3"}, format="json"
    )
    assert newer.status_code == 201
    assert EdgeRollout.objects.get(pk=first["id"]).status == RolloutStatus.CANCELLED
    assert set(EdgeDevice.objects.values_list("desired_version__number", flat=True)) == {3}


def test_rollout_api_bad_input_is_400_and_other_teams_404(
    fleet, fleet_endpoint, deployer, team, outsider, other_team, api_for, viewer
):
    api = api_for(deployer, team)
    path = f"/api/v1/targets/{fleet.name}/rollouts/"
    for body in (
        {"version": "adder:2", "waves": [{"percent": 50}, {"percent": 10}]},
        {"version": "adder:2", "waves": [{"bogus": 1}]},
        {"version": "adder:2", "max_failure_percent": 101},
        {"version": "adder:99"},
        {"version": "adder:2", "surprise": True},
    ):
        response = api.post(path, body, format="json")
        assert response.status_code in (400, 404), body
        assert response.json()["error"]
    assert (
        api_for(viewer, team).post(path, {"version": "adder:2"}, format="json").status_code == 403
    )
    assert api_for(outsider, other_team).get(path).status_code == 404
    assert EdgeRollout.objects.count() == 1  # only release 1's


def test_fleet_pages_show_devices_and_poll_only_while_rolling(
    fleet, fleet_endpoint, versions, deployer, outsider, client, system
):
    device, heartbeat_client, _key = enroll(fleet, "cam-1", labels={"site": "a"})
    enroll(fleet, "cam-2")
    report_current(heartbeat_client, device)
    client.force_login(deployer)
    listing = client.get("/fleet/")
    assert listing.status_code == 200 and b"cams" in listing.content
    page = client.get(f"/fleet/{fleet.name}/")
    assert page.status_code == 200
    assert b"cam-1" in page.content and b"site=a" in page.content
    assert b"hx-trigger" not in page.content
    edge.edge_rollout_create(
        actor=system, target=fleet, version="adder:2", waves=[{"percent": 50}, {"percent": 100}]
    )
    page = client.get(f"/fleet/{fleet.name}/")
    assert b"hx-trigger" in page.content and b"<progress" in page.content
    partial = client.get(f"/fleet/{fleet.name}/", HTTP_HX_REQUEST="true")
    assert partial.content.lstrip().startswith(b'<div id="fleet-rollouts"')
    code = client.post(f"/fleet/{fleet.name}/codes/", {"labels": "site=b", "hours": 2})
    assert code.status_code == 200 and b"enr_" in code.content
    client.force_login(outsider)
    assert client.get(f"/fleet/{fleet.name}/").status_code == 404
    assert client.post(f"/fleet/{fleet.name}/codes/", {"hours": 2}).status_code == 404


def test_the_edge_driver_refuses_a_traffic_split(fleet, fleet_endpoint, versions, system):
    from deployments.services import endpoint_deploy

    endpoint_deploy(actor=system, endpoint=fleet_endpoint, version=versions[2], weight=10)
    assert reconciler.reconcile_endpoint(endpoint_id=fleet_endpoint.pk) == "failed"
    fleet_endpoint.refresh_from_db()
    assert "one version at a time" in fleet_endpoint.status_reason


def test_ordinary_deploy_rolls_the_fleet_in_one_wave(fleet, fleet_endpoint, versions, system):
    from deployments.services import endpoint_deploy

    enroll(fleet, "cam-1")
    enroll(fleet, "cam-2")
    endpoint_deploy(actor=system, endpoint=fleet_endpoint, version=versions[3])
    assert reconciler.reconcile_endpoint(endpoint_id=fleet_endpoint.pk) == "converged"
    rollout = EdgeRollout.objects.get(release=fleet_endpoint.releases.get(number=2))
    assert rollout.from_version == versions[1] and rollout.to_version == versions[3]
    assert set(EdgeDevice.objects.values_list("desired_version__number", flat=True)) == {3}
    assert reconciler.reconcile_endpoint(endpoint_id=fleet_endpoint.pk) == "unchanged"
    assert RegisteredModel.objects.count() == 1


def test_edge_summaries_feed_the_drift_checks(fleet, fleet_endpoint, versions):
    from monitoring.models import DriftVerdict
    from monitoring.services import drift_report_create

    profile = {
        "features": [
            {"name": "x", "input": "x", "column": 0, "kind": "numeric",
             "edges": [0.0, 1.0, 2.0], "counts": [100, 100]}
        ]
    }  # fmt: skip
    versions[1].reference_profile = profile
    versions[1].save(update_fields=["reference_profile"])
    _device, client, key = enroll(fleet, "cam-1")
    manifest = verify_manifest(client.get("/api/v1/edge/desired/").json(), key, "cam-1")
    assert manifest["profile"] == profile
    # The device saw only values above 1: half of the reference's range.
    summary = {
        "sequence": 1,
        "at": datetime.now(UTC).isoformat(),
        "version": "adder:1",
        "requests": 300,
        "successes": 300,
        "rows": 300,
        "features": {"x": {"bounds": [0.0, 1.0, 2.0], "counts": [0, 0, 300, 0]}},
    }
    body = {"state": {"health": "ok"}, "summaries": [summary]}
    assert client.post("/api/v1/edge/heartbeat/", body, format="json").status_code == 200
    report = drift_report_create(endpoint=fleet_endpoint, version=versions[1])
    assert report.rows == 300
    assert report.verdict == DriftVerdict.DRIFT
