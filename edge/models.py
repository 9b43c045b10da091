"""Edge fleets: devices, their enrollment codes, and staged fleet rollouts.

The tables were created by deployments' migrations and keep their names (`db_table`).
"""

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from common.models import TimeStampedModel
from deployments.models import Endpoint, Release, Target, new_device_signing_key
from registry.models import ModelVersion

device_name_validator = RegexValidator(
    r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$",
    "Use 1-63 lowercase letters, digits, dots, underscores and hyphens.",
)


class EnrollmentCode(models.Model):
    """A one-time code that lets one device join an edge fleet; only its digest is stored."""

    target = models.ForeignKey(Target, on_delete=models.CASCADE, related_name="enrollment_codes")
    digest = models.CharField(max_length=64, unique=True)
    # Labels every device enrolled with this code starts with (e.g. {"site": "berlin"}).
    labels = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        db_table = "deployments_enrollmentcode"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"enrollment code {self.pk} of {self.target}"


class DeviceHealth(models.TextChoices):
    """How a device said its serving went, in its last heartbeat."""

    UNKNOWN = "unknown", "Unknown"
    OK = "ok", "OK"
    DEGRADED = "degraded", "Rolled back"
    FAILED = "failed", "Failed"


class EdgeDevice(TimeStampedModel):
    """One device of an edge fleet (an edge target): its token, what it should and does serve.

    `desired_sequence` rises with every change of `desired_version`; the agent applies only a
    manifest whose sequence is higher than the last one it applied, so an old one cannot be
    replayed to it.
    """

    target = models.ForeignKey(Target, on_delete=models.PROTECT, related_name="devices")
    name = models.CharField(max_length=63, validators=[device_name_validator])
    labels = models.JSONField(default=dict, blank=True)
    token_prefix = models.CharField(max_length=12, unique=True)
    token_digest = models.CharField(max_length=64)
    # The key this device's manifests are signed with: random per device and replaced with
    # its token. HMAC needs the same key on both sides, so the server keeps it (hex); it is
    # shown once, at enrolment, and never in a page or API answer.
    manifest_key = models.CharField(max_length=64, default=new_device_signing_key, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)
    desired_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    desired_sequence = models.PositiveBigIntegerField(default=0)
    # What the agent last reported.
    agent_version = models.CharField(max_length=40, blank=True)
    current_version = models.CharField(max_length=100, blank=True)
    previous_version = models.CharField(max_length=100, blank=True)
    staged_version = models.CharField(max_length=100, blank=True)
    applied_sequence = models.PositiveBigIntegerField(default=0)
    failed_sequence = models.PositiveBigIntegerField(default=0)
    failed_version = models.CharField(max_length=100, blank=True)
    health = models.CharField(
        max_length=16, choices=DeviceHealth.choices, default=DeviceHealth.UNKNOWN
    )
    status_reason = models.CharField(max_length=1000, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    # The last metric summary stored, so a re-sent batch is not counted twice.
    summary_sequence = models.PositiveBigIntegerField(default=0)

    class Meta:
        db_table = "deployments_edgedevice"
        ordering = ["target_id", "name"]
        constraints = [
            models.UniqueConstraint(fields=["target", "name"], name="edgedevice_unique_name")
        ]

    def __str__(self) -> str:
        return f"{self.target.name}/{self.name}"

    @property
    def is_active(self) -> bool:
        """A revoked device's token no longer works."""
        return self.revoked_at is None

    @property
    def signing_key(self) -> bytes:
        """The key the device's manifests are signed with (random per device, see
        `manifest_key`)."""
        return bytes.fromhex(self.manifest_key)


class RolloutStatus(models.TextChoices):
    """Where a fleet rollout is."""

    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    ABORTED = "aborted", "Aborted"
    CANCELLED = "cancelled", "Cancelled"


ROLLOUT_TERMINAL = {RolloutStatus.SUCCEEDED, RolloutStatus.ABORTED, RolloutStatus.CANCELLED}


class EdgeRollout(TimeStampedModel):
    """Moving a fleet from one version to another in waves, with an abort threshold.

    `waves` = [{"percent": P} | {"labels": {key: value}}]: a percent wave brings the share of
    the fleet on the new version up to P %; a label wave takes every device whose labels
    include those. A wave starts once the one before has reported (or timed out) and at least
    `wave_interval_seconds` after it started (the rate limit).
    """

    target = models.ForeignKey(Target, on_delete=models.CASCADE, related_name="rollouts")
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="edge_rollouts")
    release = models.ForeignKey(
        Release, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The release an abort wrote to send the fleet back (the reconciler must not undo it).
    abort_release = models.ForeignKey(
        Release, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    from_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    to_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    waves = models.JSONField(default=list)
    wave_interval_seconds = models.PositiveIntegerField(default=0)
    wave_timeout_seconds = models.PositiveIntegerField(default=3600)
    max_failure_percent = models.PositiveSmallIntegerField(default=20)
    min_reported = models.PositiveSmallIntegerField(default=1)
    status = models.CharField(
        max_length=16, choices=RolloutStatus.choices, default=RolloutStatus.RUNNING, db_index=True
    )
    status_reason = models.CharField(max_length=1000, blank=True)
    # Index of the wave started last (-1: none yet).
    current_wave = models.IntegerField(default=-1)
    wave_started_at = models.DateTimeField(null=True, blank=True)
    # The endpoint generation the driver last published this rollout for (its "route table").
    generation = models.PositiveIntegerField(default=0)
    retry_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "deployments_edgerollout"
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"rollout {self.pk} of {self.target} to {self.to_version}"

    @property
    def is_terminal(self) -> bool:
        """Finished, one way or another; it no longer changes any device."""
        return self.status in ROLLOUT_TERMINAL


class RolloutDeviceState(models.TextChoices):
    """One device's part in a rollout."""

    ASSIGNED = "assigned", "Assigned"
    UPDATED = "updated", "Updated"
    FAILED = "failed", "Failed"
    REVERTED = "reverted", "Sent back"


class EdgeRolloutDevice(models.Model):
    """A device a rollout's wave moved to the new version, and how that went."""

    rollout = models.ForeignKey(EdgeRollout, on_delete=models.CASCADE, related_name="assignments")
    device = models.ForeignKey(EdgeDevice, on_delete=models.CASCADE, related_name="assignments")
    wave = models.PositiveSmallIntegerField()
    # What the device was meant to serve before, to send it back on abort.
    previous_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The device's desired_sequence that carried the new version.
    sequence = models.PositiveBigIntegerField()
    state = models.CharField(
        max_length=16, choices=RolloutDeviceState.choices, default=RolloutDeviceState.ASSIGNED
    )
    assigned_at = models.DateTimeField(default=timezone.now)
    reported_at = models.DateTimeField(null=True, blank=True)
    reason = models.CharField(max_length=1000, blank=True)

    class Meta:
        db_table = "deployments_edgerolloutdevice"
        ordering = ["rollout_id", "wave", "device_id"]
        constraints = [
            models.UniqueConstraint(fields=["rollout", "device"], name="rolloutdevice_unique")
        ]

    def __str__(self) -> str:
        return f"{self.device} in {self.rollout}: {self.state}"
