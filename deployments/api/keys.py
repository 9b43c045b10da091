"""Inference keys of an endpoint: create (shown once), list (prefix only), revoke."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import api_view
from rest_framework.response import Response

from accounts.actor import Actor
from accounts.models import Role
from accounts.permissions import require_role
from common.api import Pagination
from common.schema import ErrorSerializer
from deployments import access, selectors
from deployments.models import Endpoint, EndpointKey


class KeyCreateSerializer(serializers.Serializer):
    """A new key; the name only helps people tell keys apart."""

    name = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")


class KeyCreatedSerializer(serializers.Serializer):
    """A new key: `key` is the only time the secret is shown."""

    id = serializers.IntegerField()
    prefix = serializers.CharField()
    key = serializers.CharField()


class KeySerializer(serializers.ModelSerializer):
    """A key as listed: never the secret."""

    created_by = serializers.CharField(source="created_by.username", default=None)

    class Meta:
        model = EndpointKey
        fields = ["id", "name", "prefix", "created_at", "created_by", "revoked_at"]
        read_only_fields = fields


class EndpointUpdateSerializer(serializers.Serializer):
    """Endpoint settings changed in place (no new release)."""

    require_key = serializers.BooleanField()


def endpoint_for(request, name: str) -> Endpoint:
    """The caller's endpoint by name; other teams' endpoints are 404."""
    actor = Actor.from_request(request)
    return get_object_or_404(selectors.endpoint_list_for_actor(actor=actor), name=name)


@extend_schema(methods=["GET"], responses={200: KeySerializer(many=True), 404: ErrorSerializer})
@extend_schema(
    methods=["POST"],
    request=KeyCreateSerializer,
    responses={201: KeyCreatedSerializer, 400: ErrorSerializer, 403: ErrorSerializer},
)
@api_view(["GET", "POST"])
def key_list(request, name: str):
    """GET: the endpoint's keys, newest first (prefix only). POST: a new key, shown once."""
    endpoint = endpoint_for(request, name)
    if request.method == "GET":
        paginator = Pagination()
        page = paginator.paginate_queryset(access.endpoint_key_list(endpoint=endpoint), request)
        return paginator.get_paginated_response(KeySerializer(page, many=True).data)
    require_role(Actor.from_request(request), endpoint.team_id, Role.DEPLOYER)
    data = KeyCreateSerializer(data=request.data)
    data.is_valid(raise_exception=True)
    key, plain = access.endpoint_key_create(
        actor=Actor.from_request(request), endpoint=endpoint, name=data.validated_data["name"]
    )
    body = KeyCreatedSerializer({"id": key.pk, "prefix": key.prefix, "key": plain}).data
    return Response(body, status=status.HTTP_201_CREATED)


@extend_schema(responses={204: None, 403: ErrorSerializer, 404: ErrorSerializer})
@api_view(["DELETE"])
def key_revoke(request, name: str, key_id: int):
    """Revoke a key; the gateway refuses it once the endpoint reconciled (seconds)."""
    endpoint = endpoint_for(request, name)
    key = get_object_or_404(EndpointKey, pk=key_id, endpoint=endpoint)
    access.endpoint_key_revoke(actor=Actor.from_request(request), endpoint=endpoint, key=key)
    return Response(status=status.HTTP_204_NO_CONTENT)
