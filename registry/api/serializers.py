"""Registry API representations and the small input serializers of its operations."""

from django.urls import reverse
from rest_framework import serializers

from registry.models import (
    Alias,
    AliasEvent,
    ArtifactKind,
    BatchJob,
    JobStatus,
    ModelVersion,
    Optimization,
    OptimizationMethod,
    RegisteredModel,
)


class RegisteredModelSerializer(serializers.ModelSerializer):
    team = serializers.SlugRelatedField(slug_field="name", read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    latest_version = serializers.SerializerMethodField()
    archived = serializers.BooleanField(source="is_archived", read_only=True)

    class Meta:
        model = RegisteredModel
        fields = [
            "name",
            "team",
            "description",
            "tags",
            "latest_version",
            "archived",
            "archived_at",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_latest_version(self, model: RegisteredModel) -> int | None:
        return model.last_version_number or None


class ModelCreateSerializer(serializers.Serializer):
    """Rules on names, descriptions and tags live in the service; these are the shapes."""

    name = serializers.CharField(trim_whitespace=False)
    description = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    tags = serializers.JSONField(required=False)
    team = serializers.CharField(required=False, allow_blank=True)


class ModelUpdateSerializer(serializers.Serializer):
    description = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    tags = serializers.JSONField(required=False)


class ModelVersionSerializer(serializers.ModelSerializer):
    model = serializers.SlugRelatedField(slug_field="name", read_only=True)
    reference = serializers.CharField(read_only=True)
    sha256 = serializers.SerializerMethodField()
    size = serializers.SerializerMethodField()
    file_name = serializers.SerializerMethodField()
    aliases = serializers.SerializerMethodField()
    derived_from = serializers.SlugRelatedField(slug_field="number", read_only=True)
    approved_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    has_reference_profile = serializers.SerializerMethodField()

    class Meta:
        model = ModelVersion
        fields = [
            "model",
            "number",
            "reference",
            "status",
            "status_reason",
            "approval",
            "approval_comment",
            "approved_by",
            "approved_at",
            "signature",
            "sha256",
            "size",
            "file_name",
            "metrics",
            "params",
            "source",
            "git_commit",
            "data_reference",
            "derived_from",
            "aliases",
            "validation_report",
            "smoke_warning",
            "has_reference_profile",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def _model_artifact(self, version: ModelVersion):
        return next((a for a in version.artifacts.all() if a.kind == ArtifactKind.MODEL), None)

    def get_sha256(self, version: ModelVersion) -> str | None:
        artifact = self._model_artifact(version)
        return artifact.sha256 if artifact else None

    def get_size(self, version: ModelVersion) -> int | None:
        artifact = self._model_artifact(version)
        return artifact.size if artifact else None

    def get_file_name(self, version: ModelVersion) -> str | None:
        artifact = self._model_artifact(version)
        return artifact.original_name if artifact else None

    def get_aliases(self, version: ModelVersion) -> list[str]:
        return [alias.name for alias in version.aliases.all()]

    def get_has_reference_profile(self, version: ModelVersion) -> bool:
        return version.reference_profile is not None


class VersionCreateSerializer(serializers.Serializer):
    """multipart: the ONNX `file` and optional lineage, metrics, params and reference CSV."""

    file = serializers.FileField(allow_empty_file=True, use_url=False)
    reference = serializers.FileField(required=False, allow_empty_file=True, use_url=False)
    source = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    metrics = serializers.CharField(required=False, allow_blank=True, help_text="JSON object")
    params = serializers.CharField(required=False, allow_blank=True, help_text="JSON object")
    git_commit = serializers.CharField(required=False, allow_blank=True)
    data_reference = serializers.CharField(required=False, allow_blank=True)
    derived_from = serializers.IntegerField(required=False, min_value=1, max_value=2**31 - 1)


class ApproveSerializer(serializers.Serializer):
    decision = serializers.ChoiceField(choices=["approved", "rejected"])
    comment = serializers.CharField(required=False, allow_blank=True, max_length=2_000)


class AliasSerializer(serializers.ModelSerializer):
    version = serializers.SlugRelatedField(slug_field="number", read_only=True)
    protected = serializers.BooleanField(source="is_protected", read_only=True)

    class Meta:
        model = Alias
        fields = ["name", "version", "protected", "created_at", "updated_at"]
        read_only_fields = fields


class AliasSetSerializer(serializers.Serializer):
    version = serializers.IntegerField(min_value=1, max_value=2**31 - 1)
    reason = serializers.CharField(required=False, allow_blank=True, max_length=500)
    protected = serializers.BooleanField(required=False)


class AliasDeleteSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=500)


class AliasEventSerializer(serializers.ModelSerializer):
    alias = serializers.CharField(source="alias_name", read_only=True)
    from_version = serializers.SlugRelatedField(slug_field="number", read_only=True)
    to_version = serializers.SlugRelatedField(slug_field="number", read_only=True)
    actor = serializers.CharField(source="actor_label", read_only=True)

    class Meta:
        model = AliasEvent
        fields = ["id", "alias", "from_version", "to_version", "actor", "reason", "created_at"]
        read_only_fields = fields


class AliasHistorySerializer(serializers.Serializer):
    """The history of one alias; with `?at=`, also the version it named then."""

    alias = serializers.CharField()
    at = serializers.DateTimeField(allow_null=True)
    version_at = serializers.IntegerField(allow_null=True)
    events = AliasEventSerializer(many=True)


class CompareSerializer(serializers.Serializer):
    a = serializers.CharField()
    b = serializers.CharField()
    identical = serializers.BooleanField()
    differences = serializers.DictField()


class BatchJobSerializer(serializers.ModelSerializer):
    """A batch job as API.md describes it; `errors` holds the first bad rows and why."""

    version = serializers.CharField(source="version.reference", read_only=True)
    progress = serializers.IntegerField(read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    result_url = serializers.SerializerMethodField()

    class Meta:
        model = BatchJob
        fields = [
            "id",
            "version",
            "status",
            "status_reason",
            "progress",
            "rows_done",
            "rows_failed",
            "rows_total",
            "throughput",
            "errors",
            "input_name",
            "input_format",
            "input_size",
            "input_sha256",
            "key_column",
            "result_size",
            "result_url",
            "report",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    def get_result_url(self, job: BatchJob) -> str | None:
        if job.status != JobStatus.SUCCEEDED or not job.result_key:
            return None
        return reverse("batch-job-result", args=[job.pk])


class BatchJobCreateSerializer(serializers.Serializer):
    """multipart: `version` ("model:N" or "model@alias"), the input `file`, an optional
    `key_column` copied into the result (default: a column named id, key or row_id)."""

    version = serializers.CharField(max_length=200)
    file = serializers.FileField(allow_empty_file=True, use_url=False)
    key_column = serializers.CharField(required=False, allow_blank=True, max_length=200)


class OptimizeSerializer(serializers.Serializer):
    method = serializers.ChoiceField(
        choices=OptimizationMethod.values, default=OptimizationMethod.INT8
    )


class OptimizationSerializer(serializers.ModelSerializer):
    source = serializers.SlugRelatedField(slug_field="number", read_only=True)
    result = serializers.SlugRelatedField(slug_field="number", read_only=True)

    class Meta:
        model = Optimization
        fields = [
            "id",
            "source",
            "method",
            "status",
            "status_reason",
            "result",
            "report",
            "created_at",
        ]
        read_only_fields = fields
