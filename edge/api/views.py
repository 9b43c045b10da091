"""Edge API: enrollment codes, fleet devices and rollouts (people), and the device side
(enroll, desired state, heartbeat, artifact download) authenticated by device tokens."""

from __future__ import annotations

import re

from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import authentication, exceptions, permissions, status
from rest_framework.decorators import (
    api_view,
    authentication_classes,
    permission_classes,
    throttle_classes,
)
from rest_framework.response import Response

from accounts.actor import Actor, client_ip
from accounts.throttle import ClientAddressThrottle
from common.api import Pagination
from common.errors import ApplicationError
from common.schema import PAGE_PARAMETERS, paginated
from edge import selectors, services
from edge.api import serializers as edge_api
from edge.models import EdgeDevice
from registry.models import ArtifactKind
from registry.storage import open_artifact

CHUNK_BYTES = 256 * 1024
RANGE_PATTERN = re.compile(r"^bytes=(\d{1,15})-(\d{0,15})$")


# --- device authentication --------------------------------------------------------------------


class DeviceTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer edg_<prefix>_<secret>`; anything else is a 401."""

    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        keyword, _, value = header.partition(" ")
        if not header or keyword.lower() != self.keyword.lower():
            return None
        device = services.device_authenticate(value.strip())
        if device is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked device token.")
        return None, device

    def authenticate_header(self, request):
        return self.keyword


class IsDevice(permissions.BasePermission):
    """Only an enrolled, active device."""

    def has_permission(self, request, view):
        return isinstance(request.auth, EdgeDevice)


def _device_view(methods):
    def wrap(function):
        function = permission_classes([IsDevice])(function)
        function = authentication_classes([DeviceTokenAuthentication])(function)
        return api_view(methods)(function)

    return wrap


class EnrollThrottle(ClientAddressThrottle):
    """Enrollment codes are long and random; this only slows down noisy clients."""

    rate = "30/min"


# --- people: codes, devices, rollouts ---------------------------------------------------------


def _fleet(request, name: str):
    return selectors.fleet_get_for_actor(actor=Actor.from_request(request), name=name)


def _device_data(device: EdgeDevice) -> dict:
    return {
        "name": device.name,
        "labels": device.labels,
        "desired_version": device.desired_version.reference if device.desired_version else None,
        "desired_sequence": device.desired_sequence,
        "current_version": device.current_version,
        "previous_version": device.previous_version,
        "staged_version": device.staged_version,
        "health": device.health,
        "status_reason": device.status_reason,
        "agent_version": device.agent_version,
        "last_seen_at": device.last_seen_at,
        "online": selectors.device_is_online(device),
        "revoked": not device.is_active,
    }


def _rollout_data(rollout) -> dict:
    return {
        "id": rollout.pk,
        "fleet": rollout.target.name,
        "status": rollout.status,
        "status_reason": rollout.status_reason,
        "from_version": rollout.from_version.reference if rollout.from_version else None,
        "to_version": rollout.to_version.reference,
        "release": rollout.release.number if rollout.release else None,
        "waves": selectors.rollout_waves(rollout),
        "current_wave": rollout.current_wave,
        "wave_interval_seconds": rollout.wave_interval_seconds,
        "wave_timeout_seconds": rollout.wave_timeout_seconds,
        "max_failure_percent": rollout.max_failure_percent,
        "min_reported": rollout.min_reported,
        "retry_of": rollout.retry_of_id,
        "created_at": rollout.created_at,
        "finished_at": rollout.finished_at,
    }


@extend_schema(
    request=edge_api.EnrollmentCodeInputSerializer,
    responses={201: edge_api.EnrollmentCodeSerializer},
)
@api_view(["POST"])
def enrollment_code_create(request, name: str):
    """A one-time enrollment code for this fleet (deployers, admins); shown once."""
    target = _fleet(request, name)
    data = request.data if isinstance(request.data, dict) else {}
    code, plain = services.enrollment_code_create(
        actor=Actor.from_request(request),
        target=target,
        labels=data.get("labels"),
        hours=data.get("hours"),
    )
    body = {
        "code": plain,
        "fleet": target.name,
        "labels": code.labels,
        "expires_at": code.expires_at,
    }
    return Response(body, status=status.HTTP_201_CREATED)


@extend_schema(responses=paginated(edge_api.DeviceSerializer), parameters=PAGE_PARAMETERS)
@api_view(["GET"])
def device_list(request, name: str):
    """The fleet's devices with what they should and do serve."""
    target = _fleet(request, name)
    paginator = Pagination()
    devices = paginator.paginate_queryset(selectors.device_list_for_fleet(target=target), request)
    return paginator.get_paginated_response([_device_data(device) for device in devices])


@extend_schema(request=None, responses=edge_api.DeviceSerializer)
@api_view(["POST"])
def device_revoke(request, name: str, device: str):
    """Revoke a device's token (deployers, admins)."""
    target = _fleet(request, name)
    row = get_object_or_404(selectors.device_list_for_fleet(target=target), name=device)
    row = services.device_revoke(actor=Actor.from_request(request), device=row)
    return Response(_device_data(row))


@extend_schema(
    methods=["GET"], responses=paginated(edge_api.RolloutSerializer), parameters=PAGE_PARAMETERS
)
@extend_schema(
    methods=["POST"],
    request=edge_api.RolloutInputSerializer,
    responses={201: edge_api.RolloutSerializer},
)
@api_view(["GET", "POST"])
def rollout_list(request, name: str):
    """A fleet's rollouts (newest first); POST `{version, waves, wave_interval_seconds,
    wave_timeout_seconds, max_failure_percent, min_reported, note}` starts one."""
    target = _fleet(request, name)
    if request.method == "GET":
        paginator = Pagination()
        rollouts = paginator.paginate_queryset(
            selectors.rollout_list_for_fleet(target=target), request
        )
        return paginator.get_paginated_response([_rollout_data(rollout) for rollout in rollouts])
    data = request.data
    if not isinstance(data, dict):
        raise ApplicationError("Send a JSON object.", {})
    allowed = {
        "version", "waves", "wave_interval_seconds", "wave_timeout_seconds",
        "max_failure_percent", "min_reported", "note",
    }  # fmt: skip
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ApplicationError(f"Unknown fields: {', '.join(unknown)}.", {"fields": unknown})
    options = {key: data[key] for key in allowed - {"version", "waves", "note"} if key in data}
    rollout = services.edge_rollout_create(
        actor=Actor.from_request(request),
        target=target,
        version=data.get("version"),
        waves=data.get("waves"),
        note=str(data.get("note", ""))[:500],
        **options,
    )
    return Response(_rollout_data(rollout), status=status.HTTP_201_CREATED)


def _rollout(request, rollout_id: int):
    return selectors.rollout_get_for_actor(actor=Actor.from_request(request), rollout_id=rollout_id)


@extend_schema(responses=edge_api.RolloutSerializer)
@api_view(["GET"])
def rollout_detail(request, rollout_id: int):
    """One rollout with per-wave progress."""
    return Response(_rollout_data(_rollout(request, rollout_id)))


@extend_schema(request=None, responses=edge_api.RolloutSerializer)
@api_view(["POST"])
def rollout_cancel(request, rollout_id: int):
    """Stop a running rollout where it is; harmless on a finished one."""
    rollout = services.edge_rollout_cancel(
        actor=Actor.from_request(request), rollout=_rollout(request, rollout_id)
    )
    return Response(_rollout_data(rollout))


@extend_schema(request=None, responses={201: edge_api.RolloutSerializer})
@api_view(["POST"])
def rollout_retry(request, rollout_id: int):
    """Run an aborted or cancelled rollout again (returns the running retry if there is one)."""
    rollout = services.edge_rollout_retry(
        actor=Actor.from_request(request), rollout=_rollout(request, rollout_id)
    )
    return Response(_rollout_data(rollout), status=status.HTTP_201_CREATED)


# --- devices ------------------------------------------------------------------------------------


@extend_schema(request=edge_api.EnrollInputSerializer, responses={201: edge_api.EnrolledSerializer})
@api_view(["POST"])
@authentication_classes([])
@permission_classes([permissions.AllowAny])
@throttle_classes([EnrollThrottle])
def enroll(request):
    """`{code, name}` → the device token and manifest key, shown once."""
    data = request.data if isinstance(request.data, dict) else {}
    device, token, key = services.device_enroll(
        code=data.get("code"), name=data.get("name"), ip=client_ip(request)
    )
    body = {"device": device.name, "fleet": device.target.name, "token": token, "key": key}
    return Response(body, status=status.HTTP_201_CREATED)


@extend_schema(responses={200: edge_api.DesiredStateSerializer, 304: None})
@_device_view(["GET"])
def desired(request):
    """The device's signed desired state; 304 when `If-None-Match` holds the current ETag."""
    device = request.auth
    etag = selectors.device_etag(device)
    if etag in {tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")}:
        response = HttpResponse(status=304)
    else:
        response = Response(selectors.device_manifest(device))
    response["ETag"] = etag
    response["Cache-Control"] = "no-store"
    return response


@extend_schema(request=edge_api.HeartbeatInputSerializer, responses=edge_api.HeartbeatSerializer)
@_device_view(["POST"])
def heartbeat(request):
    """The device's reported state and buffered metric summaries."""
    result = services.device_heartbeat_record(device=request.auth, payload=request.data)
    return Response(result)


@extend_schema(responses={(200, "application/octet-stream"): OpenApiTypes.BINARY})
@_device_view(["GET"])
def artifact(request, version_id: int):
    """The model file of the device's desired version only; honours `Range: bytes=a-b`."""
    device = request.auth
    if device.desired_version_id != version_id:
        raise exceptions.NotFound("This version is not in your desired state.")
    row = device.desired_version.artifacts.filter(kind=ArtifactKind.MODEL).first()
    if row is None:
        raise exceptions.NotFound("This version has no model file.")
    size = row.size
    start, end = 0, size - 1
    range_header = request.headers.get("Range", "")
    if range_header:
        match = RANGE_PATTERN.match(range_header.strip())
        if match is None or int(match[1]) >= size:
            response = HttpResponse(status=416)
            response["Content-Range"] = f"bytes */{size}"
            return response
        start = int(match[1])
        end = min(int(match[2]), size - 1) if match[2] else size - 1
        if end < start:
            response = HttpResponse(status=416)
            response["Content-Range"] = f"bytes */{size}"
            return response
    stream = open_artifact(row)
    stream.seek(start)

    def chunks(remaining=end - start + 1):
        try:
            while remaining > 0:
                block = stream.read(min(CHUNK_BYTES, remaining))
                if not block:
                    return
                remaining -= len(block)
                yield block
        finally:
            stream.close()

    response = StreamingHttpResponse(
        chunks(), status=206 if range_header else 200, content_type="application/octet-stream"
    )
    response["Content-Length"] = str(end - start + 1)
    response["Accept-Ranges"] = "bytes"
    response["X-Content-SHA256"] = row.sha256
    if range_header:
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
    return response
