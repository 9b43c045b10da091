"""The registry's REST API: models by name, versions by number, aliases with history, batch
prediction jobs and optimizations."""

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import FileResponse
from django.utils.dateparse import parse_datetime
from django.utils.timezone import is_naive, make_aware
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response

from accounts.actor import Actor
from accounts.models import Role
from accounts.permissions import require_role
from common.api import JSONParser
from common.errors import ApplicationError
from common.schema import ErrorSerializer
from registry import selectors, services
from registry.api import serializers as registry_serializers
from registry.models import ArtifactKind, JobStatus
from registry.storage import artifact_storage, open_artifact
from registry.uploads import CappedHashingUploadHandler

MAX_HISTORY = 1_000


def _flag(value: str | None) -> bool | None:
    if value is None or value == "":
        return None
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise ApplicationError("Use true or false.", {"archived": ["Use true or false."]})


class ModelScopedMixin:
    """Views nested under /models/{name}/: the model, looked up within the caller's teams."""

    def get_actor(self) -> Actor:
        return Actor.from_request(self.request)

    def get_registered_model(self):
        if not hasattr(self, "_registered_model"):
            self._registered_model = selectors.model_get_for_actor(
                actor=self.get_actor(), name=self.kwargs["model_name"]
            )
        return self._registered_model


@extend_schema(
    parameters=[
        OpenApiParameter("q", str, description="Search in names and descriptions."),
        OpenApiParameter("tag", str, description="`key` or `key=value`."),
        OpenApiParameter("archived", bool, description="Default: active models only."),
    ]
)
class RegisteredModelViewSet(viewsets.ModelViewSet):
    """Registered models of the caller's teams, looked up by name. DELETE archives."""

    serializer_class = registry_serializers.RegisteredModelSerializer
    lookup_field = "name"
    lookup_value_regex = "[^/]+"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        actor = Actor.from_request(self.request)
        if self.action != "list":
            return selectors.model_list_for_actor(actor=actor)
        params = self.request.query_params
        archived = _flag(params.get("archived"))
        return selectors.model_list_for_actor(
            actor=actor,
            q=params.get("q", ""),
            tag=params.get("tag", ""),
            archived=False if archived is None else archived,
        ).order_by("name")

    def get_object(self):
        return selectors.model_get_for_actor(
            actor=Actor.from_request(self.request), name=self.kwargs["name"]
        )

    @extend_schema(
        request=registry_serializers.ModelCreateSerializer,
        responses={201: registry_serializers.RegisteredModelSerializer},
    )
    def create(self, request, *args, **kwargs):
        actor = Actor.from_request(request)
        data = registry_serializers.ModelCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        team = selectors.team_for_new_model(actor=actor, team_name=data.validated_data.get("team"))
        model = services.model_create(
            actor=actor,
            team=team,
            name=data.validated_data["name"],
            description=data.validated_data.get("description", ""),
            tags=data.validated_data.get("tags"),
        )
        return Response(self.get_serializer(model).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=registry_serializers.ModelUpdateSerializer)
    def partial_update(self, request, *args, **kwargs):
        data = registry_serializers.ModelUpdateSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        model = services.model_update(
            actor=Actor.from_request(request),
            model=self.get_object(),
            description=data.validated_data.get("description"),
            tags=data.validated_data.get("tags"),
        )
        return Response(self.get_serializer(model).data)

    def destroy(self, request, *args, **kwargs):
        services.model_archive(actor=Actor.from_request(request), model=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class ModelVersionViewSet(
    ModelScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Versions of one model, by number; create uploads an ONNX file (multipart)."""

    serializer_class = registry_serializers.ModelVersionSerializer
    lookup_field = "number"
    lookup_value_regex = "[0-9]+"
    # Only the upload reads a body here, and it is multipart; approve opts back into JSON.
    parser_classes = [MultiPartParser]

    def initialize_request(self, request, *args, **kwargs):
        # Before anything reads the body (a session's CSRF check does), so every uploaded byte
        # goes through the capped, hashing handler.
        if request.method == "POST":
            request.upload_handlers = [CappedHashingUploadHandler(request)]
        return super().initialize_request(request, *args, **kwargs)

    def get_queryset(self):
        return selectors.version_list(actor=self.get_actor(), model=self.get_registered_model())

    def get_object(self):
        return selectors.version_get(
            actor=self.get_actor(),
            model=self.get_registered_model(),
            number=int(self.kwargs["number"]),
        )

    @extend_schema(
        request={"multipart/form-data": registry_serializers.VersionCreateSerializer},
        responses={201: registry_serializers.ModelVersionSerializer},
    )
    def create(self, request, *args, **kwargs):
        actor = self.get_actor()
        model = self.get_registered_model()
        # Refuse the wrong role before reading (and storing) the body.
        require_role(actor, model.team_id, Role.SCIENTIST)
        data = registry_serializers.VersionCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = data.validated_data
        version = services.version_register(
            actor=actor,
            model=model,
            file=fields["file"],
            reference=fields.get("reference"),
            source=fields.get("source", ""),
            metrics=fields.get("metrics"),
            params=fields.get("params"),
            git_commit=fields.get("git_commit", ""),
            data_reference=fields.get("data_reference", ""),
            derived_from=fields.get("derived_from"),
        )
        version = selectors.version_get(actor=actor, model=model, number=version.number)
        return Response(self.get_serializer(version).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"])
    def download(self, request, *args, **kwargs):
        """The model file, as an attachment."""
        version = self.get_object()
        artifact = next(a for a in version.artifacts.all() if a.kind == ArtifactKind.MODEL)
        response = FileResponse(
            open_artifact(artifact),
            as_attachment=True,
            filename=f"{version.model.name}-{version.number}.onnx",
            content_type="application/octet-stream",
        )
        response["X-Content-SHA256"] = artifact.sha256
        return response

    @extend_schema(
        request=registry_serializers.ApproveSerializer,
        responses=registry_serializers.ModelVersionSerializer,
    )
    @action(detail=True, methods=["post"], parser_classes=[JSONParser])
    def approve(self, request, *args, **kwargs):
        """Approve or reject a version (deployer, admin)."""
        data = registry_serializers.ApproveSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        version = services.version_approve(
            actor=self.get_actor(),
            version=self.get_object(),
            decision=data.validated_data["decision"],
            comment=data.validated_data.get("comment", ""),
        )
        return Response(self.get_serializer(self._reload(version.number)).data)

    @extend_schema(
        parameters=[
            OpenApiParameter("a", int, required=True),
            OpenApiParameter("b", int, required=True),
        ],
        responses=registry_serializers.CompareSerializer,
    )
    @action(detail=False, methods=["get"])
    def compare(self, request, *args, **kwargs):
        """The differences between versions `a` and `b`, and only those."""
        numbers = []
        for key in ("a", "b"):
            value = request.query_params.get(key, "")
            if not value.isascii() or not value.isdigit() or len(value) > 9:
                raise ApplicationError(
                    f"Give ?{key}= a version number.", {key: ["A version number."]}
                )
            numbers.append(int(value))
        first, second = (self._reload(number) for number in numbers)
        return Response(selectors.version_compare(first, second))

    @extend_schema(
        request=registry_serializers.OptimizeSerializer,
        responses={202: registry_serializers.OptimizationSerializer},
    )
    @action(detail=True, methods=["post"], parser_classes=[JSONParser])
    def optimize(self, request, *args, **kwargs):
        """Derive a smaller, faster version (scientist); poll `optimizations` for the result."""
        data = registry_serializers.OptimizeSerializer(data=request.data or {})
        data.is_valid(raise_exception=True)
        optimization = services.version_optimize(
            actor=self.get_actor(), version=self.get_object(), method=data.validated_data["method"]
        )
        return Response(
            registry_serializers.OptimizationSerializer(optimization).data,
            status=status.HTTP_202_ACCEPTED,
        )

    @extend_schema(responses=registry_serializers.OptimizationSerializer(many=True))
    @action(detail=True, methods=["get"])
    def optimizations(self, request, *args, **kwargs):
        """Optimizations requested from this version, newest first."""
        items = selectors.optimization_list(version=self.get_object())[:100]
        return Response(registry_serializers.OptimizationSerializer(items, many=True).data)

    def _reload(self, number: int):
        return selectors.version_get(
            actor=self.get_actor(), model=self.get_registered_model(), number=number
        )


class AliasViewSet(ModelScopedMixin, viewsets.GenericViewSet):
    """A model's aliases: PUT sets or moves one, DELETE removes it, history lists every move."""

    serializer_class = registry_serializers.AliasSerializer
    lookup_field = "name"
    lookup_url_kwarg = "alias"
    lookup_value_regex = "[^/]+"

    def get_queryset(self):
        return selectors.alias_list(model=self.get_registered_model())

    def get_object(self):
        name = self.kwargs["alias"]
        alias = (
            self.get_queryset().filter(name=name).first() if selectors.is_alias_name(name) else None
        )
        if alias is None:
            raise ApplicationError(
                f"Model {self.get_registered_model().name!r} has no alias "
                f"{self.kwargs['alias'][:32]!r}.",
                status=404,
            )
        return alias

    def list(self, request, *args, **kwargs):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def retrieve(self, request, *args, **kwargs):
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(request=registry_serializers.AliasSetSerializer)
    def update(self, request, *args, **kwargs):
        data = registry_serializers.AliasSetSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        alias = services.alias_set(
            actor=self.get_actor(),
            model=self.get_registered_model(),
            name=self.kwargs["alias"],
            version_number=data.validated_data["version"],
            reason=data.validated_data.get("reason", ""),
            protected=data.validated_data.get("protected"),
        )
        return Response(self.get_serializer(alias).data)

    @extend_schema(request=registry_serializers.AliasDeleteSerializer)
    def destroy(self, request, *args, **kwargs):
        data = registry_serializers.AliasDeleteSerializer(data=request.data or {})
        data.is_valid(raise_exception=True)
        services.alias_delete(
            actor=self.get_actor(),
            model=self.get_registered_model(),
            name=self.kwargs["alias"],
            reason=data.validated_data.get("reason", ""),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "at",
                OpenApiTypes.DATETIME,
                description="Which version the alias named at this time.",
            )
        ],
        responses=registry_serializers.AliasHistorySerializer,
    )
    @action(detail=True, methods=["get"])
    def history(self, request, *args, **kwargs):
        """Every move of the alias, newest first; `?at=` also answers which version it named."""
        model = self.get_registered_model()
        name = self.kwargs["alias"]
        events = selectors.alias_history(model=model, name=name)
        if not events.exists():
            raise ApplicationError(f"Model {model.name!r} has no alias {name[:32]!r}.", status=404)
        at = self._parse_at(request.query_params.get("at"))
        if at is None:
            current = events.first().to_version
        else:
            current = selectors.alias_version_at(model, name, at)
        return Response(
            {
                "alias": name,
                "at": at,
                "version": current.number if current else None,
                "events": registry_serializers.AliasEventSerializer(
                    events[:MAX_HISTORY], many=True
                ).data,
            }
        )

    @staticmethod
    def _parse_at(value: str | None):
        if not value:
            return None
        try:
            parsed = parse_datetime(value.strip())
        except ValueError:
            parsed = None
        if parsed is None:
            raise ApplicationError(
                "?at= takes an ISO-8601 time, e.g. 2025-01-31T12:00:00Z.",
                {"at": ["An ISO-8601 date and time."]},
            )
        return make_aware(parsed) if is_naive(parsed) else parsed


class BatchJobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Batch prediction jobs of the caller's teams; create uploads a CSV or Parquet file."""

    serializer_class = registry_serializers.BatchJobSerializer
    parser_classes = [MultiPartParser]
    lookup_value_regex = "[0-9]+"

    def initialize_request(self, request, *args, **kwargs):
        # Every uploaded byte goes through the capped, hashing handler (see the versions).
        if request.method == "POST":
            request.upload_handlers = [
                CappedHashingUploadHandler(request, max_bytes=settings.BATCH_MAX_INPUT_BYTES)
            ]
        return super().initialize_request(request, *args, **kwargs)

    def get_queryset(self):
        return selectors.batch_job_list_for_actor(
            actor=Actor.from_request(self.request),
            status=self.request.query_params.get("status", ""),
        )

    def get_object(self):
        return selectors.batch_job_get_for_actor(
            actor=Actor.from_request(self.request), job_id=self.kwargs["pk"]
        )

    @extend_schema(
        request={"multipart/form-data": registry_serializers.BatchJobCreateSerializer},
        responses={201: registry_serializers.BatchJobSerializer},
    )
    def create(self, request, *args, **kwargs):
        actor = Actor.from_request(request)
        if not actor.is_system and not any(
            actor.has_role(team_id, Role.SCIENTIST) for team_id in actor.team_ids
        ):
            # Refuse before reading (and storing) the body.
            raise PermissionDenied("Creating batch jobs needs the scientist role or higher.")
        data = registry_serializers.BatchJobCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        job = services.batch_job_create(
            actor=actor,
            version_reference=data.validated_data["version"],
            file=data.validated_data["file"],
            key_column=data.validated_data.get("key_column", ""),
        )
        job = selectors.batch_job_get_for_actor(actor=actor, job_id=job.pk)
        return Response(self.get_serializer(job).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.BINARY, 409: ErrorSerializer})
    @action(detail=True, methods=["get"])
    def result(self, request, *args, **kwargs):
        """The result CSV (the key column and the outputs), as an attachment."""
        job = self.get_object()
        if job.status != JobStatus.SUCCEEDED or not job.result_key:
            raise ApplicationError(
                f"Batch job {job.pk} is {job.status}; a result exists once it has succeeded.",
                status=409,
            )
        return batch_result_response(job)

    @extend_schema(request=None, responses=registry_serializers.BatchJobSerializer)
    @action(detail=True, methods=["post"], parser_classes=[JSONParser])
    def cancel(self, request, *args, **kwargs):
        """Stop a pending or running job; the worker stops between chunks."""
        job = services.batch_job_cancel(actor=Actor.from_request(request), job=self.get_object())
        return Response(self.get_serializer(job).data)


def batch_result_response(job) -> FileResponse:
    """A job's result file as an attachment under a name we choose."""
    try:
        stream = artifact_storage().open(job.result_key, "rb")
    except OSError:
        raise ApplicationError(
            "The result file is missing from the artifact storage.", status=404
        ) from None
    return FileResponse(
        stream,
        as_attachment=True,
        filename=f"{job.version.model.name}-{job.version.number}-batch-{job.pk}.csv",
        content_type="text/csv",
    )
