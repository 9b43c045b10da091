"""Signals deployments sends to the apps above it (which connect receivers in ready())."""

from django.dispatch import Signal

# A release was written (decisions developer's contract; sent inside the service transaction).
release_written = Signal()

# A device's heartbeat carried a metric summary for a fleet endpoint; sent inside the heartbeat's
# transaction with kwargs `endpoint`, `version_id` and `summary` (already validated by
# deployments.edge.services.check_heartbeat).
edge_summary_received = Signal()
