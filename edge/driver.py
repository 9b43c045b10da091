"""The edge target: a fleet of devices that pull their desired state; nothing is pushed.

For the reconciler an edge endpoint "runs" a version once a fleet rollout for the desired
release exists: `ensure_server` starts that rollout (one wave, default abort threshold) when
the release came from the ordinary endpoint actions, and the rollout, driven by heartbeats and
beat, moves the devices. Per-device progress lives on the rollout, not on the endpoint status.
There is no gateway to switch: each device serves on its own; the "route table" generation
is recorded on the rollout so the reconciler's fencing still holds.
"""

from __future__ import annotations

from typing import Any

from deployments.models import Endpoint, VariantRole
from deployments.targets.base import (
    DriverError,
    GatewayState,
    Observation,
    OwnedResource,
    Route,
    ServerSpec,
    ServerState,
    TargetDriver,
)
from edge.models import EdgeRollout


class EdgeDriver(TargetDriver):
    """Publishes desired state to a fleet through rollouts; devices pull it."""

    kind = "edge"

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """Optional `description` of where the fleet lives; nothing to connect to."""
        cls.refuse_unknown_settings(config, {"description"})
        return dict(config)

    def _rollout(self, endpoint: Endpoint) -> EdgeRollout | None:
        release_id = endpoint.desired_release_id
        if release_id is None:
            return None
        return (
            EdgeRollout.objects.filter(endpoint=endpoint, release_id=release_id).first()
            or EdgeRollout.objects.filter(endpoint=endpoint, abort_release_id=release_id).first()
        )

    def observe(self, *, endpoint: Endpoint) -> Observation:
        """The desired release's version counts as running once its rollout exists."""
        rollout = self._rollout(endpoint)
        if rollout is None:
            return Observation()
        release = endpoint.desired_release
        servers = [
            ServerState(
                endpoint_id=endpoint.pk,
                version_id=variant["version_id"],
                version=variant["version"],
                release_number=release.number,
                handle=f"rollout-{rollout.pk}",
                upstream="",
                alive=True,
                ready=True,
                detail=f"fleet rollout {rollout.pk} is {rollout.status}",
            )
            for variant in release.variants
        ]
        gateway = GatewayState(
            endpoint_id=endpoint.pk,
            handle=f"fleet-{self.target.pk}",
            url="",
            admin_url="",
            alive=True,
            ready=True,
            generation=rollout.generation or None,
        )
        return Observation(servers=servers, gateway=gateway)

    def ensure_server(self, *, endpoint: Endpoint, spec: ServerSpec) -> ServerState:
        """Start the fleet rollout of the desired release (once)."""
        from edge.services import edge_rollout_for_release

        release = endpoint.desired_release
        live = [v for v in release.variants if v["role"] != VariantRole.SHADOW]
        if len(live) != 1:
            raise DriverError(
                "An edge fleet serves one version at a time; use a fleet rollout (waves) "
                "instead of a traffic split."
            )
        rollout = edge_rollout_for_release(endpoint=endpoint, release=release)
        handle = f"rollout-{rollout.pk}" if rollout is not None else ""
        return ServerState(
            endpoint_id=endpoint.pk,
            version_id=spec.version_id,
            version=spec.version,
            release_number=spec.release_number,
            handle=handle,
            upstream="",
            alive=True,
            ready=rollout is not None,
        )

    def ensure_gateway(self, *, endpoint: Endpoint) -> GatewayState:
        """Devices serve on their own; the fleet's "gateway" is always there."""
        return GatewayState(
            endpoint_id=endpoint.pk,
            handle=f"fleet-{self.target.pk}",
            url="",
            admin_url="",
            alive=True,
            ready=True,
        )

    def set_routes(
        self,
        *,
        endpoint: Endpoint,
        gateway: GatewayState,
        routes: list[Route],
        generation: int,
        sticky: dict[str, str] | None = None,
    ) -> None:
        """Record the generation on the release's rollout (the fence the reconciler checks)."""
        rollout = self._rollout(endpoint)
        if rollout is not None:
            EdgeRollout.objects.filter(pk=rollout.pk, generation__lte=generation).update(
                generation=generation
            )

    def remove_server(self, *, server: ServerState) -> None:
        """Devices leave a version when their desired state changes; nothing to stop here."""

    def remove_gateway(self, *, gateway: GatewayState) -> None:
        """No gateway runs for a fleet."""

    def list_owned(self) -> list[OwnedResource]:
        """A fleet starts nothing on this side."""
        return []

    def remove_owned(self, *, resource: OwnedResource) -> None:
        """Nothing to remove."""
