"""The worker's side of the gateway admin API (`GET`/`PUT /-/routes`), shared by the drivers
whose gateway is `modeldeck-gateway` (local, docker)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
from modeldeck_runtime.protocol import route_document
from modeldeck_runtime.protocol import route_table_document as protocol_route_table_document

from deployments.access import endpoint_access_document
from deployments.targets.base import DriverError, GatewayState, Route, StaleGeneration
from deployments.targets.policy import HostRefused, check_url

if TYPE_CHECKING:
    from deployments.models import Endpoint

ADMIN_TIMEOUT_SECONDS = 5.0
PROBE_TIMEOUT_SECONDS = 1.0

# One pooled client per worker process (httpx.Client is thread-safe): probes and route pushes
# reuse connections instead of opening one per call. Proxies from the environment never apply.
_client = httpx.Client(trust_env=False)


def route_table_document(
    *,
    routes: list[Route],
    generation: int,
    sticky: dict[str, str] | None,
    access: dict | None = None,
) -> dict:
    """The body of `PUT /-/routes` for these routes (with the endpoint's `access` part, see
    deployments.access.endpoint_access_document, when given)."""
    entries = [
        route_document(
            version=route.version,
            upstreams=route.upstreams or (route.upstream,),
            weight=route.weight,
            role=route.role,
            mirror_percent=route.mirror_percent,
        )
        for route in routes
    ]
    return protocol_route_table_document(
        generation=generation, sticky=sticky, routes=entries, access=access
    )


def same_route_table(live: dict | None, expected: dict) -> bool:
    """Whether the table a gateway serves has the content of the expected one: the same routes,
    sticky key, generation and access (key requirement and key digests), in any order."""
    from modeldeck_runtime.keys import AccessError, parse_access
    from modeldeck_runtime.routing import TableError, parse_table

    if live is None:
        return False
    try:
        held, wanted = parse_table(live), parse_table(expected)
        same_access = parse_access(live) == parse_access(expected)
    except (TableError, AccessError):
        return False
    return (
        same_access
        and held.generation == wanted.generation
        and (held.sticky_header, held.sticky_cookie) == (wanted.sticky_header, wanted.sticky_cookie)
        and sorted(held.routes, key=_version) == sorted(wanted.routes, key=_version)
    )


def gateway_put_routes(
    *,
    admin_url: str,
    token: str,
    routes: list[Route],
    generation: int,
    sticky: dict[str, str] | None = None,
    access: dict | None = None,
) -> dict:
    """Replace the gateway's route table; StaleGeneration when it holds a newer one."""
    document = route_table_document(
        routes=routes, generation=generation, sticky=sticky, access=access
    )
    try:
        check_url(admin_url)
    except HostRefused as error:
        raise DriverError(
            f"The gateway's address is refused by this installation: {error}."
        ) from None
    try:
        response = _client.put(
            f"{admin_url}/-/routes",
            json=document,
            timeout=ADMIN_TIMEOUT_SECONDS,
            headers={"Authorization": f"Bearer {token}"},
        )
    except httpx.HTTPError as error:
        raise DriverError(f"The gateway at {admin_url} is unreachable: {error}") from None
    if response.status_code == 409:
        raise StaleGeneration(_error_message(response))
    if response.status_code != 200:
        raise DriverError(
            f"The gateway refused the route table ({response.status_code}): "
            f"{_error_message(response)}"
        )
    return response.json()


def gateway_read_routes(*, admin_url: str, token: str) -> dict | None:
    """The gateway's current route table, or None when it does not answer."""
    try:
        check_url(admin_url)
        response = _client.get(
            f"{admin_url}/-/routes",
            timeout=PROBE_TIMEOUT_SECONDS,
            headers={"Authorization": f"Bearer {token}"},
        )
    except (httpx.HTTPError, HostRefused):
        return None
    if response.status_code != 200:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def http_ready(url: str) -> bool:
    """Whether GET url answers 200 quickly (a readiness probe)."""
    try:
        check_url(url)
        return _client.get(url, timeout=PROBE_TIMEOUT_SECONDS).status_code == 200
    except (httpx.HTTPError, HostRefused):
        return False


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))[:500]
    except (ValueError, AttributeError):
        return response.text[:500]


def _version(route) -> str:
    return route.version


class AdminApiRoutes:
    """``TargetDriver.set_routes`` for drivers whose gateway is `modeldeck-gateway` reached over
    its admin URL (local, docker): PUT the endpoint's whole table, with its access part."""

    def set_routes(
        self,
        *,
        endpoint: Endpoint,
        gateway: GatewayState,
        routes: list[Route],
        generation: int,
        sticky: dict[str, str] | None = None,
    ) -> None:
        gateway_put_routes(
            admin_url=gateway.admin_url,
            token=endpoint.gateway_token,
            routes=routes,
            generation=generation,
            sticky=sticky,
            access=endpoint_access_document(endpoint),
        )
