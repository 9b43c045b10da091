"""Edge tasks (found by the worker's autodiscovery of each app's tasks.py)."""

from celery import shared_task

from edge.services import edge_rollouts_advance_all


# The explicit name is the one the beat schedule and queued messages use (the module moved).
@shared_task(name="deployments.edge.tasks.advance_edge_rollouts", ignore_result=True)
def advance_edge_rollouts() -> int:
    """Beat: move every running fleet rollout on (waves whose rate limit or timeout has passed,
    when no heartbeat did it already)."""
    return edge_rollouts_advance_all()
