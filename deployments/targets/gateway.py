"""The worker's side of the gateway admin API (`GET`/`PUT /-/routes`), shared by the drivers
whose gateway is `modeldeck-gateway` (local, docker)."""

from __future__ import annotations

import httpx

from deployments.targets.base import DriverError, Route, StaleGeneration

ADMIN_TIMEOUT_SECONDS = 5.0
PROBE_TIMEOUT_SECONDS = 1.0

# One pooled client per worker process (httpx.Client is thread-safe): probes and route pushes
# reuse connections instead of opening one per call. Proxies from the environment never apply.
_client = httpx.Client(trust_env=False)


def route_table_document(
    *, routes: list[Route], generation: int, sticky: dict[str, str] | None
) -> dict:
    """The body of `PUT /-/routes` for these routes."""
    entries = []
    for route in routes:
        entry = {"version": route.version, **_upstream_entry(route)}
        entry.update(weight=route.weight, role=route.role)
        if route.role == "shadow":
            entry["mirror_percent"] = route.mirror_percent
        entries.append(entry)
    return {"generation": generation, "sticky": sticky or None, "routes": entries}


def _upstream_entry(route: Route) -> dict:
    """One replica as "upstream" (which gateways of any runtime version read), several as
    "upstreams"."""
    if len(route.upstreams) > 1:
        return {"upstreams": list(route.upstreams)}
    return {"upstream": route.upstreams[0] if route.upstreams else route.upstream}


def gateway_put_routes(
    *,
    admin_url: str,
    token: str,
    routes: list[Route],
    generation: int,
    sticky: dict[str, str] | None = None,
) -> dict:
    """Replace the gateway's route table; StaleGeneration when it holds a newer one."""
    document = route_table_document(routes=routes, generation=generation, sticky=sticky)
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
        response = _client.get(
            f"{admin_url}/-/routes",
            timeout=PROBE_TIMEOUT_SECONDS,
            headers={"Authorization": f"Bearer {token}"},
        )
    except httpx.HTTPError:
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
        return _client.get(url, timeout=PROBE_TIMEOUT_SECONDS).status_code == 200
    except httpx.HTTPError:
        return False


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))[:500]
    except (ValueError, AttributeError):
        return response.text[:500]
