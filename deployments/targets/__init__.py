"""Target drivers: one module per kind behind the interface in `base.py`."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from deployments.targets.base import DriverError, TargetDriver

if TYPE_CHECKING:
    from deployments.models import Target

# kind -> "module:Class"; imported on first use so a kind's client library loads only when needed.
DRIVERS = {
    "local": "deployments.targets.local.driver:LocalDriver",
    "docker": "deployments.targets.docker.driver:DockerDriver",
    "kubernetes": "deployments.targets.kubernetes.driver:KubernetesDriver",
    # "edge": registered by edge.apps.EdgeConfig.ready() (edge sits above deployments).
}


def driver_class(kind: str) -> type[TargetDriver]:
    """The driver class for a target kind; DriverError when this kind has no driver yet."""
    path = DRIVERS.get(kind)
    if path is None:
        raise DriverError(f"No driver for targets of kind {kind!r}.")
    module_name, class_name = path.split(":")
    try:
        module = import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        raise DriverError(f"Targets of kind {kind!r} are not supported yet.") from None
    return getattr(module, class_name)


def driver_for(target: Target) -> TargetDriver:
    """A driver instance for one target."""
    return driver_class(target.kind)(target)
