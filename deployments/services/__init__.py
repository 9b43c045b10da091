"""Writes for deployments: targets, endpoints and the releases that say what they should serve.

Every endpoint action (deploy, traffic, promote, rollback, stop) is one transaction that locks
the endpoint row, writes one new immutable Release with the next dense number, bumps the
endpoint's generation (the reconciler's fence), appends one AuditEvent and one DeploymentEvent,
and enqueues the reconciler once the transaction commits.

One module per noun: `targets`, `endpoints`, `releases` (writing the next release), `rollouts`
(canary strategies), `scale`, `processes` (local processes), and `_common` for the helpers they
share. Callers import the services from this package.
"""

from deployments.services._common import (
    # The edge services (edge/services/) build their releases from these.
    _check_deployable,
    _lock,
    _variant,
    _version_resolve,
    deployment_event_record,
)
from deployments.services.endpoints import (
    RESERVED_ENDPOINT_NAMES,
    endpoint_create,
    endpoint_deploy,
    endpoint_promote,
    endpoint_rollback,
    endpoint_set_traffic,
    endpoint_stop,
    rollback_default,
)
from deployments.services.processes import local_processes_stop_all
from deployments.services.releases import KEEP_STICKY, _release_write
from deployments.services.rollouts import endpoint_advance_rollout
from deployments.services.scale import (
    AUTOSCALING_KINDS,
    MAX_REPLICAS,
    SCALABLE_KINDS,
    endpoint_scale,
)
from deployments.services.targets import (
    target_changes,
    target_create,
    target_delete,
    target_update,
)

__all__ = [
    "AUTOSCALING_KINDS",
    "KEEP_STICKY",
    "MAX_REPLICAS",
    "RESERVED_ENDPOINT_NAMES",
    "SCALABLE_KINDS",
    "_check_deployable",
    "_lock",
    "_release_write",
    "_variant",
    "_version_resolve",
    "deployment_event_record",
    "endpoint_advance_rollout",
    "endpoint_create",
    "endpoint_deploy",
    "endpoint_promote",
    "endpoint_rollback",
    "endpoint_scale",
    "endpoint_set_traffic",
    "endpoint_stop",
    "local_processes_stop_all",
    "rollback_default",
    "target_changes",
    "target_create",
    "target_delete",
    "target_update",
]
