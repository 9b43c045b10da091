"""Serializers of the deployments API: explicit fields out, small input serializers in."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from common.schema import ErrorSerializer  # noqa: F401 (re-exported for the views)
from deployments.models import (
    Build,
    DeploymentEvent,
    Endpoint,
    Environment,
    Release,
    Target,
    TargetKind,
    VariantRole,
)
from deployments.selectors import release_traffic


class TargetSerializer(serializers.ModelSerializer):
    """A target as the API shows it."""

    team = serializers.CharField(source="team.name", read_only=True)

    class Meta:
        model = Target
        fields = ["name", "team", "kind", "environment", "config", "description", "created_at"]
        read_only_fields = fields


class TargetCreateSerializer(serializers.Serializer):
    """Input of POST /targets/."""

    name = serializers.CharField(max_length=40)
    kind = serializers.ChoiceField(choices=TargetKind.choices)
    environment = serializers.ChoiceField(choices=Environment.choices, default=Environment.DEV)
    config = serializers.JSONField(required=False, default=dict)
    description = serializers.CharField(max_length=500, required=False, allow_blank=True)
    team = serializers.CharField(
        max_length=63, required=False, help_text="Needed only when you belong to several teams."
    )


class TargetUpdateSerializer(serializers.Serializer):
    """Input of PUT/PATCH /targets/{name}/ (name and kind never change; PATCH takes any
    subset, PUT needs environment and config)."""

    environment = serializers.ChoiceField(choices=Environment.choices)
    config = serializers.JSONField()
    description = serializers.CharField(max_length=500, required=False, allow_blank=True)


class TrafficSerializer(serializers.Serializer):
    """One row of an endpoint's split."""

    version = serializers.CharField()
    weight = serializers.IntegerField()
    role = serializers.CharField()
    mirror_percent = serializers.IntegerField()


class EndpointSerializer(serializers.ModelSerializer):
    """An endpoint with its current split and release."""

    team = serializers.CharField(source="team.name", read_only=True)
    target = serializers.CharField(source="target.name", read_only=True)
    traffic = serializers.SerializerMethodField()
    release = serializers.SerializerMethodField()
    live_release = serializers.SerializerMethodField()

    class Meta:
        model = Endpoint
        fields = [
            "name", "team", "target", "status", "status_reason", "url", "traffic", "release",
            "live_release", "generation", "last_reconciled_at", "created_at", "updated_at",
            "require_key",
        ]  # fmt: skip
        read_only_fields = fields

    @extend_schema_field(TrafficSerializer(many=True))
    def get_traffic(self, endpoint: Endpoint) -> list[dict]:
        return release_traffic(endpoint.desired_release)

    def get_release(self, endpoint: Endpoint) -> int | None:
        release = endpoint.desired_release
        return release.number if release is not None else None

    def get_live_release(self, endpoint: Endpoint) -> int | None:
        release = endpoint.live_release
        return release.number if release is not None else None


class EndpointCreateSerializer(serializers.Serializer):
    """Input of POST /endpoints/: deploys `version` at 100 %."""

    name = serializers.CharField(max_length=40)
    target = serializers.CharField(max_length=40)
    version = serializers.CharField(max_length=200, help_text='"model:N" or "model@alias"')
    note = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class StrategyStepSerializer(serializers.Serializer):
    """One canary step: serve `weight` %, then wait `bake_seconds` before the next."""

    weight = serializers.IntegerField(min_value=0, max_value=100)
    bake_seconds = serializers.IntegerField(min_value=0, default=0)


class DeploySerializer(serializers.Serializer):
    """Input of POST /endpoints/{name}/deploy/."""

    version = serializers.CharField(max_length=200, help_text='"model:N" or "model@alias"')
    weight = serializers.IntegerField(min_value=0, max_value=100, required=False)
    strategy = StrategyStepSerializer(many=True, required=False)
    note = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    force = serializers.BooleanField(
        default=False,
        help_text="Change even when the new signature breaks the served one's clients "
        "(deployers; audited).",
    )


class VariantInputSerializer(serializers.Serializer):
    """One row of a requested split; a shadow's weight is its mirror percentage."""

    version = serializers.CharField(max_length=200)
    weight = serializers.IntegerField(min_value=0, max_value=100, required=False)
    role = serializers.ChoiceField(choices=VariantRole.choices, default=VariantRole.PRIMARY)
    mirror_percent = serializers.IntegerField(min_value=0, max_value=100, required=False)


class SetTrafficSerializer(serializers.Serializer):
    """Input of POST /endpoints/{name}/traffic/."""

    variants = VariantInputSerializer(many=True, allow_empty=False)
    note = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    force = serializers.BooleanField(
        default=False,
        help_text="Change even when the new signature breaks the served one's clients "
        "(deployers; audited).",
    )


class RollbackSerializer(serializers.Serializer):
    """Input of POST /endpoints/{name}/rollback/."""

    release = serializers.IntegerField(min_value=1, required=False)
    note = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    force = serializers.BooleanField(
        default=False,
        help_text="Change even when the new signature breaks the served one's clients "
        "(deployers; audited).",
    )


class NoteSerializer(serializers.Serializer):
    """Input of promote and stop: an optional note."""

    note = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class PromoteSerializer(NoteSerializer):
    """Input of POST /endpoints/{name}/promote/."""

    force = serializers.BooleanField(
        default=False,
        help_text="Change even when the new signature breaks the served one's clients "
        "(deployers; audited).",
    )


class ReleaseAcceptedSerializer(serializers.Serializer):
    """Answer of every endpoint write: the new release number (the reconciler works on it)."""

    release = serializers.IntegerField()


class ReleaseSerializer(serializers.ModelSerializer):
    """One immutable release."""

    traffic = serializers.SerializerMethodField()
    restores = serializers.SerializerMethodField()
    actor = serializers.CharField(source="actor_label", read_only=True)

    class Meta:
        model = Release
        fields = [
            "number", "reason", "traffic", "strategy", "sticky", "replicas", "restores", "actor",
            "note", "created_at", "live_at",
        ]  # fmt: skip
        read_only_fields = fields

    @extend_schema_field(TrafficSerializer(many=True))
    def get_traffic(self, release: Release) -> list[dict]:
        return release_traffic(release)

    def get_restores(self, release: Release) -> int | None:
        return release.restores.number if release.restores_id else None


class DeploymentEventSerializer(serializers.ModelSerializer):
    """One progress line."""

    release = serializers.SerializerMethodField()

    class Meta:
        model = DeploymentEvent
        fields = ["id", "created_at", "level", "message", "release", "data"]
        read_only_fields = fields

    def get_release(self, event: DeploymentEvent) -> int | None:
        return event.release.number if event.release_id else None


class BuildSerializer(serializers.ModelSerializer):
    """A serving image build."""

    version = serializers.CharField(source="version.reference", read_only=True)
    target = serializers.CharField(source="target.name", read_only=True)

    class Meta:
        model = Build
        fields = [
            "id", "version", "target", "platform", "status", "status_reason", "progress", "log",
            "image", "digest", "created_at", "started_at", "finished_at",
        ]  # fmt: skip
        read_only_fields = fields


class AutoscaleSerializer(serializers.Serializer):
    """Bounds of an autoscaled version (Kubernetes targets: a HorizontalPodAutoscaler)."""

    min = serializers.IntegerField(help_text="1-20")
    max = serializers.IntegerField(help_text="min-20")
    target_cpu_percent = serializers.IntegerField(help_text="1-100")


class ScaleSerializer(serializers.Serializer):
    """Input of POST /endpoints/{name}/scale/: `replicas` or `autoscale`, never both.

    Numbers are checked by the service (1-20 replicas), so a bad one is answered with the same
    readable sentence the page shows."""

    version = serializers.CharField(max_length=200, help_text='"model:N" of the current release')
    replicas = serializers.IntegerField(required=False, help_text="1-20")
    autoscale = AutoscaleSerializer(required=False)
    note = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class ScaleAcceptedSerializer(serializers.Serializer):
    """Answer of a scale: the new release and how the version will run."""

    release = serializers.IntegerField()
    version = serializers.CharField()
    replicas = serializers.IntegerField(allow_null=True)
    autoscale = AutoscaleSerializer(allow_null=True)


class ReplicaStatusSerializer(serializers.Serializer):
    """Replicas of one version: ready as of the last reconcile, desired by the release; role
    "warm" for a version kept running for a rollback until `warm_until`."""

    version = serializers.CharField()
    role = serializers.CharField()
    ready = serializers.IntegerField()
    desired = serializers.IntegerField()
    autoscale = AutoscaleSerializer(allow_null=True)
    warm_until = serializers.DateTimeField(allow_null=True)
