"""The registry's nouns: models, their versions, stored artifacts, and aliases with history."""

import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from accounts.models import Team
from common.models import TimeStampedModel

MODEL_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
model_name_validator = RegexValidator(
    MODEL_NAME_PATTERN,
    "Use 1-63 characters: lowercase letters, digits, '.', '_' or '-', starting with a letter "
    "or digit.",
)
ALIAS_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
alias_name_validator = RegexValidator(
    ALIAS_NAME_PATTERN,
    "Use 1-32 characters: lowercase letters, digits, '_' or '-', starting with a letter.",
)


class RegisteredModel(TimeStampedModel):
    """A named model owned by a team; its versions hold the files."""

    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="models")
    name = models.CharField(max_length=63, unique=True, validators=[model_name_validator])
    description = models.TextField(blank=True, max_length=10_000)
    tags = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    archived_at = models.DateTimeField(null=True, blank=True)
    # The last number handed out; incremented under a row lock so numbers stay dense.
    last_version_number = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["name"]
        constraints = [
            # Names are lowercase by rule; this makes a case-only twin impossible even for rows
            # written around the services (admin, shell, another process racing a create).
            models.UniqueConstraint(Lower("name"), name="registeredmodel_unique_lower_name")
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_archived(self) -> bool:
        """Archived models keep their history but take no new versions."""
        return self.archived_at is not None


class VersionStatus(models.TextChoices):
    """Where a version is in its life: uploaded, being checked, usable, refused, retired."""

    PENDING = "pending", "Pending"
    VALIDATING = "validating", "Validating"
    READY = "ready", "Ready"
    INVALID = "invalid", "Invalid"
    ARCHIVED = "archived", "Archived"


VALIDATION_IN_FLIGHT = {VersionStatus.PENDING, VersionStatus.VALIDATING}
VALIDATION_TERMINAL = {VersionStatus.READY, VersionStatus.INVALID, VersionStatus.ARCHIVED}


class Approval(models.TextChoices):
    """A reviewer's decision on a version."""

    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"


class ModelVersion(TimeStampedModel):
    """One uploaded file of a model, numbered densely from 1, with what validation found."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    status = models.CharField(
        max_length=16, choices=VersionStatus.choices, default=VersionStatus.PENDING, db_index=True
    )
    status_reason = models.TextField(blank=True)
    approval = models.CharField(max_length=16, choices=Approval.choices, default=Approval.PENDING)
    approval_comment = models.TextField(blank=True, max_length=2_000)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    # {inputs: [{name, datatype, shape}], outputs: [...]} as the Open Inference Protocol names them.
    signature = models.JSONField(default=dict, blank=True)
    # What validation measured: opset, producer, load time, single-row latency, checks passed.
    validation_report = models.JSONField(default=dict, blank=True)
    # Set on a ready version whose smoke inference on generated zeros failed (no reference rows).
    smoke_warning = models.CharField(max_length=500, blank=True)
    # The reference-row inference request the smoke test passed with; becomes smoke.json.
    smoke_input = models.JSONField(null=True, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    params = models.JSONField(default=dict, blank=True)
    source = models.URLField(max_length=2_000, blank=True)
    git_commit = models.CharField(max_length=64, blank=True)
    data_reference = models.CharField(max_length=2_000, blank=True)
    # Per-feature profile of the reference inputs (quantile bins, counts, category frequencies).
    reference_profile = models.JSONField(null=True, blank=True)
    derived_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="derivatives"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    validation_started_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["model", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["model", "number"], name="version_unique_number")
        ]

    def __str__(self) -> str:
        return f"{self.model.name}:{self.number}"

    @property
    def reference(self) -> str:
        """How API callers name this version: `model:N`."""
        return f"{self.model.name}:{self.number}"

    @property
    def is_validation_finished(self) -> bool:
        """Ready, invalid or archived: nothing will change the status on its own any more."""
        return self.status in VALIDATION_TERMINAL

    @property
    def is_deployable(self) -> bool:
        """Only validated versions can serve traffic."""
        return self.status == VersionStatus.READY

    @property
    def is_approved(self) -> bool:
        """Production targets accept only approved versions."""
        return self.approval == Approval.APPROVED

    @property
    def model_artifact(self) -> "Artifact | None":
        """The ONNX file of this version."""
        return self.artifacts.filter(kind=ArtifactKind.MODEL).first()


class ArtifactKind(models.TextChoices):
    """What a stored file is for."""

    MODEL = "model", "Model"
    REFERENCE = "reference", "Reference data"


class Artifact(TimeStampedModel):
    """A stored file of a version; the storage key is ours, never the uploader's file name."""

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="artifacts")
    kind = models.CharField(max_length=16, choices=ArtifactKind.choices)
    storage_key = models.CharField(max_length=255, unique=True)
    # The uploader's file name, kept only as metadata (escaped on display, never used as a path).
    original_name = models.CharField(max_length=255, blank=True)
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    content_type = models.CharField(max_length=100)

    class Meta:
        ordering = ["version", "kind"]
        constraints = [
            models.UniqueConstraint(fields=["version", "kind"], name="artifact_unique_kind")
        ]

    def __str__(self) -> str:
        return f"{self.version} {self.kind}"


RESERVED_ALIAS_NAMES = {"latest"}
RESERVED_ALIAS_PATTERN = r"^v\d+$"
# New aliases with these names start protected unless the caller says otherwise.
DEFAULT_PROTECTED_ALIAS_NAMES = {"production", "prod"}


def is_reserved_alias_name(name: str) -> bool:
    """`latest` and `v<digits>` are answered by the registry itself, never stored."""
    return name in RESERVED_ALIAS_NAMES or re.fullmatch(RESERVED_ALIAS_PATTERN, name) is not None


class Alias(TimeStampedModel):
    """A movable name for one version of a model (`production`, `champion`, …)."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="aliases")
    name = models.CharField(max_length=32, validators=[alias_name_validator])
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="aliases")
    # Protected aliases move only by deployers and admins, and only onto approved versions.
    is_protected = models.BooleanField(default=False)

    class Meta:
        verbose_name_plural = "aliases"
        ordering = ["model", "name"]
        constraints = [models.UniqueConstraint(fields=["model", "name"], name="alias_unique_name")]

    def __str__(self) -> str:
        return f"{self.model.name}@{self.name}"


class AliasEvent(models.Model):
    """One move of an alias (set, moved or deleted); rows are never changed or deleted."""

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    model = models.ForeignKey(
        RegisteredModel, on_delete=models.CASCADE, related_name="alias_events"
    )
    alias_name = models.CharField(max_length=32)
    from_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # Null when the alias was deleted.
    to_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_label = models.CharField(max_length=200)
    reason = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["model", "alias_name", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.model.name}@{self.alias_name} → {self.to_version_id}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValidationError("Alias history is append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValidationError("Alias history is append-only.")


class JobStatus(models.TextChoices):
    """Where a background job on a version is: queued, working, or finished one way or another."""

    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


JOB_ACTIVE = {JobStatus.PENDING, JobStatus.RUNNING}
JOB_TERMINAL = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}


class BatchJob(TimeStampedModel):
    """One input file scored by one version; the team is the version's model's team."""

    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="batch_jobs")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(
        max_length=16, choices=JobStatus.choices, default=JobStatus.PENDING, db_index=True
    )
    status_reason = models.TextField(blank=True)
    # The input, stored under a key we made; the uploader's name is metadata only.
    input_key = models.CharField(max_length=255, unique=True)
    input_name = models.CharField(max_length=255, blank=True)
    input_format = models.CharField(max_length=16, default="csv")
    input_size = models.BigIntegerField(default=0)
    input_sha256 = models.CharField(max_length=64, blank=True)
    key_column = models.CharField(max_length=200, blank=True)
    rows_total = models.BigIntegerField(null=True, blank=True)
    rows_done = models.BigIntegerField(default=0)
    rows_failed = models.BigIntegerField(default=0)
    throughput = models.FloatField(null=True, blank=True)  # rows per second
    # The first bad rows and why: [{row, reason}], capped; rows_failed counts them all.
    errors = models.JSONField(default=list, blank=True)
    report = models.JSONField(default=dict, blank=True)
    result_key = models.CharField(max_length=255, blank=True)
    result_size = models.BigIntegerField(null=True, blank=True)
    # Incremented on every (re)start, so a stale worker's writes are fenced off.
    attempt = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"batch job {self.pk} on {self.version}"

    @property
    def is_terminal(self) -> bool:
        """Succeeded, failed or cancelled: nothing changes any more."""
        return self.status in JOB_TERMINAL

    @property
    def progress(self) -> int:
        """Percent of rows handled (0-100)."""
        if self.status == JobStatus.SUCCEEDED:
            return 100
        if not self.rows_total:
            return 0
        handled = self.rows_done + self.rows_failed
        return min(100, int(100 * handled / self.rows_total))


class OptimizationMethod(models.TextChoices):
    """How an optimized version is made from its parent."""

    INT8 = "int8", "Graph optimizations + dynamic int8 quantization"
    FLOAT16 = "float16", "Graph optimizations + float16 weights"


class Optimization(TimeStampedModel):
    """One request to derive a smaller, faster version from a ready one."""

    source = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="optimizations")
    method = models.CharField(
        max_length=16, choices=OptimizationMethod.choices, default=OptimizationMethod.INT8
    )
    status = models.CharField(
        max_length=16, choices=JobStatus.choices, default=JobStatus.PENDING, db_index=True
    )
    status_reason = models.TextField(blank=True)
    # Sizes, latency ratio, output agreement on the reference data, steps and notes.
    report = models.JSONField(default=dict, blank=True)
    result = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    started_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.method} optimization of {self.source}"

    @property
    def is_terminal(self) -> bool:
        """Finished one way or another."""
        return self.status in JOB_TERMINAL
