from django.apps import AppConfig


class EdgeConfig(AppConfig):
    """Edge fleets: devices, enrollment, signed manifests and staged rollouts."""

    name = "edge"

    def ready(self):
        # Deployments drives every target kind through its driver registry but never imports
        # edge (edge sits above it), so the edge kind's driver is registered from here.
        from deployments import targets

        targets.DRIVERS["edge"] = "edge.driver:EdgeDriver"
