"""Edge tasks (imported by deployments.tasks so the worker registers them)."""

from celery import shared_task

from deployments.edge.services import edge_rollouts_advance_all


@shared_task(ignore_result=True)
def advance_edge_rollouts() -> int:
    """Beat: move every running fleet rollout on (waves whose rate limit or timeout has passed,
    when no heartbeat did it already)."""
    return edge_rollouts_advance_all()
