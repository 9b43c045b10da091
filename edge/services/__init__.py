"""Writes for edge fleets: enrollment, device tokens, heartbeats and fleet rollouts.

A fleet is an edge target with (at most) one endpoint; the endpoint's releases say which
version the fleet should serve, exactly as for every other target, and a rollout moves the
devices to it wave by wave. Each device has its own `desired_version` and a rising
`desired_sequence`; the agent pulls a manifest signed with the device's key.

One module per noun: `enrollment` (codes, joining a fleet), `devices` (tokens), `fleets` (the
fleet's version), `heartbeats` (reported state and summaries), `rollouts` (waves), and
`_common` for the limits and input checks they share. Callers import the services from this
package: `from edge import services` or `from edge.services import X`.
"""

from edge.services._common import check_labels
from edge.services.devices import device_authenticate, device_credentials_rotate, device_revoke
from edge.services.enrollment import device_enroll, enrollment_code_create
from edge.services.fleets import fleet_baseline_version, fleet_endpoint, release_primary_version
from edge.services.heartbeats import check_heartbeat, device_heartbeat_record
from edge.services.rollouts import (
    check_waves,
    edge_rollout_advance,
    edge_rollout_cancel,
    edge_rollout_create,
    edge_rollout_for_release,
    edge_rollout_retry,
    edge_rollouts_advance_all,
)

__all__ = [
    "check_heartbeat",
    "check_labels",
    "check_waves",
    "device_authenticate",
    "device_credentials_rotate",
    "device_enroll",
    "device_heartbeat_record",
    "device_revoke",
    "edge_rollout_advance",
    "edge_rollout_cancel",
    "edge_rollout_create",
    "edge_rollout_for_release",
    "edge_rollout_retry",
    "edge_rollouts_advance_all",
    "enrollment_code_create",
    "fleet_baseline_version",
    "fleet_endpoint",
    "release_primary_version",
]
