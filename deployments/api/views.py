"""Deployments API: targets, endpoints with their actions, releases, events, builds."""

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from accounts.actor import Actor
from accounts.models import Role, Team
from accounts.permissions import require_role
from common.errors import ApplicationError
from deployments import access, selectors, services
from deployments.api import keys as keys_api
from deployments.api import serializers as api
from deployments.models import TargetKind
from deployments.targets.base import DriverError


def _actor(request) -> Actor:
    return Actor.from_request(request)


def _team_for(actor: Actor, name: str | None) -> Team:
    """The team a new object belongs to: named, or the caller's only team."""
    teams = Team.objects.filter(pk__in=actor.team_ids)
    if name:
        return get_object_or_404(teams, name=name)
    if len(actor.team_ids) != 1:
        raise ApplicationError("Name the team: you belong to several.", {"team": "required"})
    return teams.get()


def _accepted(release) -> Response:
    return Response({"release": release.number}, status=status.HTTP_202_ACCEPTED)


class TargetViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):  # fmt: skip
    """Where endpoints run; team admins create, change and delete them."""

    serializer_class = api.TargetSerializer
    lookup_field = "name"
    lookup_value_regex = "[a-z0-9-]+"

    def get_queryset(self):
        return selectors.target_list_for_actor(actor=_actor(self.request))

    @extend_schema(request=api.TargetCreateSerializer, responses={201: api.TargetSerializer})
    def create(self, request, *args, **kwargs):
        data = api.TargetCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        actor = _actor(request)
        team = _team_for(actor, fields.pop("team", None))
        target = services.target_create(actor=actor, team=team, **fields)
        return Response(api.TargetSerializer(target).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=api.TargetUpdateSerializer,
        responses={200: api.TargetSerializer, 400: api.ErrorSerializer, 409: api.ErrorSerializer},
    )
    def update(self, request, *args, **kwargs):
        partial = kwargs.pop("partial", False)
        target = self.get_object()  # first: another team's target is a 404 whatever the body
        data = api.TargetUpdateSerializer(data=request.data, partial=partial)
        data.is_valid(raise_exception=True)
        target = services.target_update(actor=_actor(request), target=target, **data.validated_data)
        return Response(api.TargetSerializer(target).data)

    @extend_schema(
        request=api.TargetUpdateSerializer,
        responses={200: api.TargetSerializer, 400: api.ErrorSerializer, 409: api.ErrorSerializer},
    )
    def partial_update(self, request, *args, **kwargs):
        return self.update(request, *args, partial=True, **kwargs)

    @extend_schema(responses={204: None, 403: api.ErrorSerializer, 409: api.ErrorSerializer})
    def destroy(self, request, *args, **kwargs):
        services.target_delete(actor=_actor(request), target=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class EndpointViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):  # fmt: skip
    """Stable inference URLs; every change writes a new release and answers 202."""

    serializer_class = api.EndpointSerializer
    lookup_field = "name"
    lookup_value_regex = "[a-z0-9-]+"

    def get_queryset(self):
        return selectors.endpoint_list_for_actor(actor=_actor(self.request))

    def _input(self, serializer_class) -> dict:
        serializer = serializer_class(data=self.request.data)
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)

    @extend_schema(request=api.EndpointCreateSerializer, responses={201: api.EndpointSerializer})
    def create(self, request, *args, **kwargs):
        data = self._input(api.EndpointCreateSerializer)
        actor = _actor(request)
        target = selectors.target_list_for_actor(actor=actor).filter(name=data["target"]).first()
        if target is None:
            raise ApplicationError(
                f"Unknown target {data['target']!r}.", {"target": data["target"]}
            )
        endpoint = services.endpoint_create(
            actor=actor,
            name=data["name"],
            target=target,
            version=data["version"],
            note=data["note"],
        )
        endpoint = self.get_queryset().get(pk=endpoint.pk)
        return Response(api.EndpointSerializer(endpoint).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=keys_api.EndpointUpdateSerializer,
        responses={
            200: api.EndpointSerializer,
            400: keys_api.ErrorSerializer,
            403: keys_api.ErrorSerializer,
        },
    )
    def update(self, request, *args, **kwargs):
        """Change endpoint settings in place: `{"require_key": true}` locks inference behind
        the endpoint's keys on any target."""
        endpoint = self.get_object()
        # The role first: a viewer learns nothing from how their input would be validated.
        require_role(_actor(request), endpoint.team_id, Role.DEPLOYER)
        data = self._input(keys_api.EndpointUpdateSerializer)
        access.endpoint_require_key_set(
            actor=_actor(request), endpoint=endpoint, require_key=data["require_key"]
        )
        endpoint = self.get_queryset().get(pk=endpoint.pk)
        return Response(api.EndpointSerializer(endpoint).data)

    @extend_schema(request=api.DeploySerializer, responses={202: api.ReleaseAcceptedSerializer})
    @action(detail=True, methods=["post"])
    def deploy(self, request, name=None):
        """Add or replace a candidate (weight < 100) or replace what serves (100)."""
        endpoint = self.get_object()
        data = self._input(api.DeploySerializer)
        strategy = [dict(step) for step in data.get("strategy", [])] or None
        release = services.endpoint_deploy(
            actor=_actor(request),
            endpoint=endpoint,
            version=data["version"],
            weight=data.get("weight"),
            strategy=strategy,
            note=data["note"],
            force=data["force"],
        )
        return _accepted(release)

    @extend_schema(request=api.SetTrafficSerializer, responses={202: api.ReleaseAcceptedSerializer})
    @action(detail=True, methods=["post"])
    def traffic(self, request, name=None):
        """Set the whole split; live weights sum to 100, shadows take a mirror percentage."""
        endpoint = self.get_object()
        data = self._input(api.SetTrafficSerializer)
        release = services.endpoint_set_traffic(
            actor=_actor(request),
            endpoint=endpoint,
            variants=[dict(variant) for variant in data["variants"]],
            note=data["note"],
            force=data["force"],
        )
        return _accepted(release)

    @extend_schema(request=api.PromoteSerializer, responses={202: api.ReleaseAcceptedSerializer})
    @action(detail=True, methods=["post"])
    def promote(self, request, name=None):
        """The candidate takes 100 %."""
        endpoint = self.get_object()
        data = self._input(api.PromoteSerializer)
        release = services.endpoint_promote(
            actor=_actor(request), endpoint=endpoint, note=data["note"], force=data["force"]
        )
        return _accepted(release)

    @extend_schema(request=api.RollbackSerializer, responses={202: api.ReleaseAcceptedSerializer})
    @action(detail=True, methods=["post"])
    def rollback(self, request, name=None):
        """Go back to a release (default: the last one that was live before the current)."""
        endpoint = self.get_object()
        data = self._input(api.RollbackSerializer)
        release = services.endpoint_rollback(
            actor=_actor(request),
            endpoint=endpoint,
            release_number=data.get("release"),
            note=data["note"],
            force=data["force"],
        )
        return _accepted(release)

    @extend_schema(methods=["GET"], request=None, responses=api.ReplicaStatusSerializer(many=True))
    @extend_schema(
        methods=["POST"],
        request=api.ScaleSerializer,
        responses={202: api.ScaleAcceptedSerializer, 400: api.ErrorSerializer},
    )
    @action(detail=True, methods=["get", "post"])
    def scale(self, request, name=None):
        """GET: replicas per version (ready / desired). POST: run a version of the current
        release on N replicas (local: processes, docker: containers, kubernetes: pods), or
        autoscale it (kubernetes only); deployers only."""
        endpoint = self.get_object()
        if request.method == "GET":
            page = self.paginate_queryset(selectors.endpoint_replicas(endpoint=endpoint))
            return self.get_paginated_response(api.ReplicaStatusSerializer(page, many=True).data)
        data = self._input(api.ScaleSerializer)
        autoscale = dict(data["autoscale"]) if "autoscale" in data else None
        release = services.endpoint_scale(
            actor=_actor(request),
            endpoint=endpoint,
            version=data["version"],
            replicas=data.get("replicas"),
            autoscale=autoscale,
            note=data["note"],
        )
        variant = next(v for v in release.variants if v["version"] == data["version"].strip())
        answer = {
            "release": release.number,
            "version": variant["version"],
            "replicas": variant.get("replicas"),
            "autoscale": variant.get("autoscale"),
        }
        return Response(api.ScaleAcceptedSerializer(answer).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=api.NoteSerializer, responses={202: api.ReleaseAcceptedSerializer})
    @action(detail=True, methods=["post"])
    def stop(self, request, name=None):
        """Stop serving."""
        endpoint = self.get_object()
        data = self._input(api.NoteSerializer)
        release = services.endpoint_stop(
            actor=_actor(request), endpoint=endpoint, note=data["note"]
        )
        return _accepted(release)

    @extend_schema(request=None, responses=api.ReleaseSerializer(many=True))
    @action(detail=True, methods=["get"])
    def releases(self, request, name=None):
        """Release history, newest first."""
        endpoint = self.get_object()
        releases = selectors.release_list_for_endpoint(endpoint=endpoint)
        page = self.paginate_queryset(releases)
        return self.get_paginated_response(api.ReleaseSerializer(page, many=True).data)

    @extend_schema(
        request=None,
        responses=api.DeploymentEventSerializer(many=True),
        parameters=[OpenApiParameter("since", int, description="only events after this id")],
    )
    @action(detail=True, methods=["get"])
    def events(self, request, name=None):
        """Progress log, oldest first, after `?since=ID`."""
        endpoint = self.get_object()
        since = request.query_params.get("since", "0")
        if not since.isdigit():
            raise ApplicationError("since must be an event id.", {"since": since[:20]})
        events = selectors.event_list_for_endpoint(endpoint=endpoint, since=int(since))
        page = self.paginate_queryset(events)
        return self.get_paginated_response(api.DeploymentEventSerializer(page, many=True).data)

    @extend_schema(request=None, responses={(200, "application/yaml"): OpenApiTypes.STR})
    @action(detail=True, methods=["get"], url_path=r"releases/(?P<number>[0-9]{1,9})/manifests")
    def manifests(self, request, name=None, number=None):
        """A Kubernetes release's objects as one YAML bundle (GitOps export; deployers only,
        since the bundle holds the gateway's admin token)."""
        endpoint = self.get_object()
        require_role(_actor(request), endpoint.team_id, Role.DEPLOYER)
        if endpoint.target.kind != TargetKind.KUBERNETES:
            raise ApplicationError("Manifests exist only for endpoints on Kubernetes targets.", {})
        release = get_object_or_404(endpoint.releases, number=int(number))
        from deployments.targets.kubernetes.export import export_manifests

        try:
            bundle = export_manifests(release)
        except DriverError as error:
            raise ApplicationError(str(error), {}) from None
        response = HttpResponse(bundle, content_type="application/yaml; charset=utf-8")
        filename = f"{endpoint.name}-release-{release.number}.yaml"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response


class BuildViewSet(mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Serving image builds (Docker and Kubernetes targets)."""

    serializer_class = api.BuildSerializer

    def get_queryset(self):
        return selectors.build_list_for_actor(actor=_actor(self.request))
