"""Input and output shapes of the edge API, so the schema types every fleet and device operation.

The services (edge.services) judge every value; these describe the shapes.
"""

from rest_framework import serializers


class EnrollmentCodeInputSerializer(serializers.Serializer):
    """Labels the enrolled device gets, and how long the code lives."""

    labels = serializers.DictField(child=serializers.CharField(), required=False)
    hours = serializers.IntegerField(required=False, min_value=1)


class EnrollmentCodeSerializer(serializers.Serializer):
    """A one-time enrollment code, shown once."""

    code = serializers.CharField()
    fleet = serializers.CharField()
    labels = serializers.DictField(child=serializers.CharField())
    expires_at = serializers.DateTimeField()


class DeviceSerializer(serializers.Serializer):
    """A device of a fleet: what it should and does serve, and how it is."""

    name = serializers.CharField()
    labels = serializers.DictField(child=serializers.CharField())
    desired_version = serializers.CharField(allow_null=True)
    desired_sequence = serializers.IntegerField()
    current_version = serializers.CharField(allow_blank=True)
    previous_version = serializers.CharField(allow_blank=True)
    staged_version = serializers.CharField(allow_blank=True)
    health = serializers.CharField(allow_blank=True)
    status_reason = serializers.CharField(allow_blank=True)
    agent_version = serializers.CharField(allow_blank=True)
    last_seen_at = serializers.DateTimeField(allow_null=True)
    online = serializers.BooleanField()
    revoked = serializers.BooleanField()


class RolloutInputSerializer(serializers.Serializer):
    """A staged rollout of one version across the fleet, in waves."""

    version = serializers.CharField(help_text='"model:N" or "model@alias"')
    waves = serializers.ListField(child=serializers.DictField(), required=False)
    wave_interval_seconds = serializers.IntegerField(required=False)
    wave_timeout_seconds = serializers.IntegerField(required=False)
    max_failure_percent = serializers.IntegerField(required=False)
    min_reported = serializers.IntegerField(required=False)
    note = serializers.CharField(required=False, allow_blank=True, max_length=500)


class RolloutSerializer(serializers.Serializer):
    """A fleet rollout with per-wave progress."""

    id = serializers.IntegerField()
    fleet = serializers.CharField()
    status = serializers.CharField()
    status_reason = serializers.CharField(allow_blank=True)
    from_version = serializers.CharField(allow_null=True)
    to_version = serializers.CharField()
    release = serializers.IntegerField(allow_null=True)
    waves = serializers.ListField(child=serializers.DictField(child=serializers.JSONField()))
    current_wave = serializers.IntegerField()
    wave_interval_seconds = serializers.IntegerField()
    wave_timeout_seconds = serializers.IntegerField()
    max_failure_percent = serializers.IntegerField()
    min_reported = serializers.IntegerField()
    retry_of = serializers.IntegerField(allow_null=True)
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)


class EnrollInputSerializer(serializers.Serializer):
    """An enrollment code and the device's name."""

    code = serializers.CharField()
    name = serializers.CharField()


class EnrolledSerializer(serializers.Serializer):
    """The device's token and manifest key, shown once."""

    device = serializers.CharField()
    fleet = serializers.CharField()
    token = serializers.CharField()
    key = serializers.CharField()


class DesiredStateSerializer(serializers.Serializer):
    """The device's desired state and its signature (the agent verifies it with its key)."""

    manifest = serializers.DictField(child=serializers.JSONField())
    signature = serializers.CharField()


class DeviceStateSerializer(serializers.Serializer):
    """What the agent serves, staged and last applied, and how it is."""

    health = serializers.CharField(required=False)
    reason = serializers.CharField(required=False, allow_blank=True)
    current_version = serializers.CharField(required=False, allow_blank=True)
    previous_version = serializers.CharField(required=False, allow_blank=True)
    staged_version = serializers.CharField(required=False, allow_blank=True)
    applied_sequence = serializers.IntegerField(required=False)
    failed_sequence = serializers.IntegerField(required=False)
    failed_version = serializers.CharField(required=False, allow_blank=True)


class HeartbeatInputSerializer(serializers.Serializer):
    """The device's state and buffered metric summaries."""

    agent_version = serializers.CharField(required=False, allow_blank=True)
    state = DeviceStateSerializer()
    summaries = serializers.ListField(child=serializers.DictField(), required=False)


class HeartbeatSerializer(serializers.Serializer):
    """How many summaries were stored, and the last summary sequence seen."""

    summaries_stored = serializers.IntegerField()
    summary_sequence = serializers.IntegerField()
