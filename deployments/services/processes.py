"""The processes local targets run on this machine, stopped all at once."""

from __future__ import annotations

from deployments.models import (
    Target,
    TargetKind,
)


def local_processes_stop_all() -> int:
    """Stop every serving process the local targets started (when a dev stack or the e2e tests
    shut down); endpoints keep their desired release, so the next reconcile restarts them.
    Returns how many processes were stopped."""
    from deployments.targets import driver_for

    stopped = 0
    for target in Target.objects.filter(kind=TargetKind.LOCAL):
        driver = driver_for(target)
        for resource in driver.list_owned():
            driver.remove_owned(resource=resource)
            stopped += 1
    return stopped
