"""Signals deployments sends so that higher layers (monitoring, events) can react to its writes
without deployments importing them.

`release_written` is sent inside the service transaction that wrote a release, after the
endpoint points at it, with keyword arguments:

- `release`: the new Release;
- `previous`: the Release it replaces, or None;
- `actor`: the accounts Actor who acted, or None;
- `reason_text`: a human phrase such as "the rollback to release 3 by alice".

A receiver that raises rolls the whole change back, so receivers only write what belongs to the
same change.
"""

from django.dispatch import Signal

release_written = Signal()

# A device's heartbeat carried a metric summary for a fleet endpoint; sent inside the heartbeat's
# transaction with kwargs `endpoint`, `version_id` and `summary` (already validated by
# edge.services.check_heartbeat).
edge_summary_received = Signal()
