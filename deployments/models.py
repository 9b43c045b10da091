"""Targets, builds, endpoints, immutable releases and their progress log."""

import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from accounts.models import Team
from common.models import TimeStampedModel
from registry.models import ModelVersion

# Endpoint and target names end up in process, container, image and Kubernetes object names, so
# they follow the strictest of those rules (a DNS label).
resource_name_validator = RegexValidator(
    r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$",
    "Use 1-40 lowercase letters, digits and hyphens, starting and ending with a letter or digit.",
)


class TargetKind(models.TextChoices):
    """Where an endpoint runs."""

    LOCAL = "local", "Local processes"
    DOCKER = "docker", "Docker host"
    KUBERNETES = "kubernetes", "Kubernetes cluster"
    EDGE = "edge", "Edge fleet"


class Environment(models.TextChoices):
    """How careful a target must be: production takes only approved versions from deployers."""

    DEV = "dev", "Development"
    STAGING = "staging", "Staging"
    PRODUCTION = "production", "Production"


class Target(TimeStampedModel):
    """A place to run endpoints; connection secrets are named (env var or file), never stored."""

    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="targets")
    name = models.CharField(max_length=40, unique=True, validators=[resource_name_validator])
    kind = models.CharField(max_length=16, choices=TargetKind.choices)
    environment = models.CharField(
        max_length=16, choices=Environment.choices, default=Environment.DEV
    )
    # Kind-specific connection settings, validated by the kind's driver.
    config = models.JSONField(default=dict, blank=True)
    description = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_production(self) -> bool:
        """Production targets accept only approved versions, and only from deployers."""
        return self.environment == Environment.PRODUCTION


class BuildStatus(models.TextChoices):
    """A serving image build's progress."""

    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


BUILD_TERMINAL = {BuildStatus.SUCCEEDED, BuildStatus.FAILED}


class Build(TimeStampedModel):
    """A serving image for one version, deployed by digest: kept on one target's engine, or
    pushed to a registry repository and then shared by every target that pushes there."""

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="builds")
    # The target whose deploy asked for the image (its engine builds it; its team sees it).
    target = models.ForeignKey(Target, on_delete=models.CASCADE, related_name="builds")
    platform = models.CharField(max_length=32, default="linux/amd64")
    base_image = models.CharField(max_length=255)
    # The registry repository the image is pushed to; blank: it stays on the building engine.
    repository = models.CharField(max_length=255, blank=True, default="")
    status = models.CharField(
        max_length=16, choices=BuildStatus.choices, default=BuildStatus.PENDING, db_index=True
    )
    progress = models.PositiveSmallIntegerField(default=0)
    log = models.TextField(blank=True)
    status_reason = models.TextField(blank=True)
    image = models.CharField(max_length=255, blank=True)
    digest = models.CharField(max_length=100, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # One image per version and registry (and base): two reconciles of two endpoints
            # that need it at once share one build instead of pushing twice.
            models.UniqueConstraint(
                fields=["version", "repository", "base_image"],
                condition=~models.Q(repository="") & ~models.Q(status="failed"),
                name="deployments_build_one_per_registry",
            )
        ]

    def __str__(self) -> str:
        return f"build {self.pk} of {self.version} on {self.target}"

    @property
    def is_terminal(self) -> bool:
        """Finished, one way or the other."""
        return self.status in BUILD_TERMINAL


class EndpointStatus(models.TextChoices):
    """An endpoint as the reconciler last saw it."""

    PENDING = "pending", "Pending"
    PROGRESSING = "progressing", "Progressing"
    LIVE = "live", "Live"
    DEGRADED = "degraded", "Degraded"
    FAILED = "failed", "Failed"
    STOPPED = "stopped", "Stopped"


ENDPOINT_SETTLED = {EndpointStatus.LIVE, EndpointStatus.FAILED, EndpointStatus.STOPPED}


def new_gateway_token() -> str:
    """A random gateway admin token (256 bits)."""
    return secrets.token_urlsafe(32)


# Kept here, not in edge.models, because migration 0004_security_access names it by this path;
# edge.models.EdgeDevice uses it as its default.
def new_device_signing_key() -> str:
    """A random manifest signing key for one device (256 bits, hex)."""
    return secrets.token_hex(32)


class Endpoint(TimeStampedModel):
    """A stable inference URL on a target; it points at the release it should be serving."""

    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="endpoints")
    name = models.CharField(max_length=40, unique=True, validators=[resource_name_validator])
    target = models.ForeignKey(Target, on_delete=models.PROTECT, related_name="endpoints")
    status = models.CharField(
        max_length=16,
        choices=EndpointStatus.choices,
        default=EndpointStatus.PENDING,
        db_index=True,
    )
    status_reason = models.TextField(blank=True)
    desired_release = models.ForeignKey(
        "Release", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The release that last converged and served traffic (what "roll back" goes back before).
    live_release = models.ForeignKey(
        "Release", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    url = models.CharField(max_length=255, blank=True)
    # Bumped by every write of a new desired release; a reconcile run that started on an older
    # generation stops before changing anything (fencing).
    generation = models.PositiveIntegerField(default=0)
    last_reconciled_at = models.DateTimeField(null=True, blank=True)
    # Written by the reconciler: {version id: {version, ready, desired, autoscale | warm_until}}
    # of the versions running for the endpoint (the page's "ready / desired replicas").
    replica_status = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The gateway's admin token: random per endpoint and rotatable. Stored as it is (not
    # hashed) because the worker must present it to the gateway's admin API and hand it to a
    # starting gateway; it is never shown in the UI or API and never logged.
    gateway_token = models.CharField(max_length=64, default=new_gateway_token, editable=False)
    # Whether inference calls must carry one of the endpoint's keys (EndpointKey).
    require_key = models.BooleanField(default=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class EndpointKey(models.Model):
    """An inference key of one endpoint; only its SHA-256 digest is stored (shown once)."""

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="keys")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=12, unique=True)
    digest = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"key {self.prefix} of {self.endpoint_id}"

    @property
    def is_active(self) -> bool:
        """A revoked key is refused by the gateway once the endpoint reconciles."""
        return self.revoked_at is None


class VariantRole(models.TextChoices):
    """How a version takes part in a release."""

    PRIMARY = "primary", "Primary"
    CANDIDATE = "candidate", "Candidate"
    SHADOW = "shadow", "Shadow"


class ReleaseReason(models.TextChoices):
    """Why a release was written."""

    DEPLOY = "deploy", "Deploy"
    TRAFFIC = "traffic", "Traffic change"
    PROMOTE = "promote", "Promote"
    ROLLBACK = "rollback", "Rollback"
    STOP = "stop", "Stop"
    ROLLOUT_STEP = "rollout_step", "Rollout step"
    SCALE = "scale", "Scale"


class Release(models.Model):
    """The whole desired state of an endpoint at one moment; never changed once written.

    `variants` = [{"version_id", "version" ("model:N"), "weight", "role", "mirror_percent"}].
    Rolling back writes a new release equal to an earlier one.
    """

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="releases")
    number = models.PositiveIntegerField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    reason = models.CharField(max_length=16, choices=ReleaseReason.choices)
    variants = models.JSONField(default=list)
    # {"header": "X-User-Id"} or {"cookie": "uid"} or null.
    sticky = models.JSONField(null=True, blank=True)
    replicas = models.PositiveSmallIntegerField(default=1)
    # Canary or linear steps still to run: [{"weight", "bake_seconds"}].
    strategy = models.JSONField(default=list, blank=True)
    # For a rollback: the release whose state this one restores.
    restores = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_label = models.CharField(max_length=200)
    note = models.CharField(max_length=500, blank=True)
    # Set once, by the reconciler, when this release first served all of its traffic.
    live_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["endpoint", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "number"], name="release_unique_number")
        ]

    def __str__(self) -> str:
        return f"{self.endpoint.name} release {self.number}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValidationError("Releases are immutable; write a new one.")
        super().save(*args, **kwargs)

    @property
    def is_stop(self) -> bool:
        """A stop release serves nothing."""
        return self.reason == ReleaseReason.STOP


class EventLevel(models.TextChoices):
    """How loud a progress line is."""

    INFO = "info", "Info"
    WARNING = "warning", "Warning"
    ERROR = "error", "Error"


class DeploymentEvent(models.Model):
    """One line of an endpoint's or build's progress log, shown live in the UI."""

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    endpoint = models.ForeignKey(
        Endpoint, null=True, blank=True, on_delete=models.CASCADE, related_name="events"
    )
    release = models.ForeignKey(
        Release, null=True, blank=True, on_delete=models.SET_NULL, related_name="events"
    )
    build = models.ForeignKey(
        Build, null=True, blank=True, on_delete=models.CASCADE, related_name="events"
    )
    level = models.CharField(max_length=8, choices=EventLevel.choices, default=EventLevel.INFO)
    message = models.CharField(max_length=1000)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.message


class ReconcileLease(models.Model):
    """Who reconciles an endpoint right now: a lease, so a killed worker's hold runs out.

    The holder is "host:pid:random"; a holder on this host whose pid is gone may be replaced at
    once, any other only after `expires_at`.
    """

    endpoint = models.OneToOneField(
        Endpoint, primary_key=True, on_delete=models.CASCADE, related_name="+"
    )
    holder = models.CharField(max_length=200)
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"lease on endpoint {self.endpoint_id} by {self.holder}"


class LocalProcessRole(models.TextChoices):
    """What a local process is for."""

    SERVER = "server", "Version server"
    GATEWAY = "gateway", "Gateway"


class LocalProcess(models.Model):
    """A process the local target started on one host, with the port it holds.

    The row is written (reserving the port) before the process starts; the process carries the
    row's `marker` on its command line, so it is found again even when the worker died before
    recording its pid. Endpoint and target are plain ids, not foreign keys: a row must outlive a
    deleted endpoint so that the sweep can still stop its processes.
    """

    created_at = models.DateTimeField(default=timezone.now)
    host = models.CharField(max_length=255)
    target_id = models.PositiveBigIntegerField(db_index=True)
    endpoint_id = models.PositiveBigIntegerField(db_index=True)
    # "gateway" or "v<version id>": one process per key and endpoint.
    key = models.CharField(max_length=32)
    role = models.CharField(max_length=16, choices=LocalProcessRole.choices)
    version_id = models.PositiveBigIntegerField(null=True, blank=True)
    version = models.CharField(max_length=100, blank=True)
    release_number = models.PositiveIntegerField(null=True, blank=True)
    port = models.PositiveIntegerField()
    pid = models.PositiveIntegerField(null=True, blank=True)
    marker = models.CharField(max_length=64, unique=True)
    started_at = models.DateTimeField(null=True, blank=True)
    restarts = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name_plural = "local processes"
        ordering = ["endpoint_id", "key"]
        constraints = [
            models.UniqueConstraint(fields=["host", "port"], name="localprocess_unique_port"),
            models.UniqueConstraint(
                fields=["host", "endpoint_id", "key"], name="localprocess_unique_key"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.role} {self.key} of endpoint {self.endpoint_id} on {self.host}:{self.port}"
