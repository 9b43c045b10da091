"""The gateway's route table: validation, and the choice of a route for each request."""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from modeldeck_runtime.protocol import MAX_UPSTREAMS, ROLES, route_document, route_table_document

_HASH_SCALE = float(1 << 64)


class TableError(ValueError):
    """A route table that cannot be used; the message is shown to the admin client."""


@dataclass(frozen=True, slots=True)
class Route:
    """One version server behind the gateway."""

    version: str
    upstream: str
    weight: float
    role: str
    mirror_percent: float
    # Every replica of the version (`upstream` is the first); one element when it runs one.
    upstreams: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.upstreams:
            object.__setattr__(self, "upstreams", (self.upstream,))

    def document(self) -> dict[str, Any]:
        """The JSON form of this route."""
        return route_document(
            version=self.version,
            upstreams=self.upstreams,
            weight=self.weight,
            role=self.role,
            mirror_percent=self.mirror_percent,
        )


@dataclass(frozen=True)
class RouteTable:
    """An immutable, validated route table; the gateway swaps whole tables, never edits one."""

    generation: int
    sticky_header: str | None
    sticky_cookie: str | None
    routes: tuple[Route, ...]
    live: tuple[Route, ...] = field(init=False)
    bounds: tuple[float, ...] = field(init=False)
    shadows: tuple[Route, ...] = field(init=False)
    by_version: dict[str, Route] = field(init=False)
    primary_version: str | None = field(init=False)

    def __post_init__(self) -> None:
        live = sorted(
            (route for route in self.routes if route.role != "shadow" and route.weight > 0),
            key=lambda route: version_order(route.version),
        )
        total = sum(route.weight for route in live) or 1.0
        bounds = []
        running = 0.0
        for route in live:
            running += route.weight
            bounds.append(running / total)
        object.__setattr__(self, "live", tuple(live))
        object.__setattr__(self, "bounds", tuple(bounds))
        object.__setattr__(
            self, "shadows", tuple(route for route in self.routes if route.role == "shadow")
        )
        object.__setattr__(self, "by_version", {route.version: route for route in self.routes})
        heaviest = max(live, key=lambda route: route.weight, default=None)
        object.__setattr__(self, "primary_version", heaviest.version if heaviest else None)

    def choose(self, point: float) -> Route | None:
        """The live route owning point in [0, 1) on the cumulative weight line."""
        if not self.live:
            return None
        index = bisect_right(self.bounds, point)
        return self.live[min(index, len(self.live) - 1)]

    def document(self) -> dict[str, Any]:
        """The JSON form of this table, as accepted by PUT /-/routes."""
        sticky: dict[str, str] | None = None
        if self.sticky_header is not None:
            sticky = {"header": self.sticky_header}
        elif self.sticky_cookie is not None:
            sticky = {"cookie": self.sticky_cookie}
        return route_table_document(
            generation=self.generation,
            sticky=sticky,
            routes=[route.document() for route in self.routes],
        )


EMPTY_TABLE = RouteTable(generation=0, sticky_header=None, sticky_cookie=None, routes=())


def version_order(version: str) -> tuple[int, int, str]:
    """Stable order of versions: numbers numerically, then other names alphabetically."""
    if version.isdigit():
        return (0, int(version), "")
    return (1, 0, version)


def sticky_point(key: str, salt: str = "") -> float:
    """Hash a sticky key to [0, 1); the same key always lands on the same point."""
    digest = hashlib.blake2b(key.encode(), digest_size=8, key=salt.encode()[:64]).digest()
    return int.from_bytes(digest, "big") / _HASH_SCALE


def _number(value: Any, what: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TableError(f"{what} must be a number")
    if not low <= value <= high:
        raise TableError(f"{what} must be between {low:g} and {high:g}")
    return value


def _route(entry: Any, position: int) -> Route:
    if not isinstance(entry, dict):
        raise TableError(f"route {position} must be an object")
    version = entry.get("version")
    if isinstance(version, int) and not isinstance(version, bool):
        version = str(version)
    if not isinstance(version, str) or not version:
        raise TableError(f"route {position} must have a 'version'")
    upstreams = _upstreams(entry, version)
    role = entry.get("role", "primary")
    if role not in ROLES:
        raise TableError(f"role of version '{version}' must be one of {', '.join(ROLES)}")
    weight = _number(entry.get("weight", 0), f"weight of version '{version}'", 0, 100)
    mirror = entry.get("mirror_percent", 0)
    if role != "shadow" and mirror:
        raise TableError(f"only shadow routes take a mirror_percent (version '{version}')")
    mirror = _number(mirror, f"mirror_percent of version '{version}'", 0, 100)
    return Route(version, upstreams[0], weight, role, mirror, upstreams)


def _upstreams(entry: dict, version: str) -> tuple[str, ...]:
    """The route's replicas: "upstream" (one URL) or "upstreams" (1..20 distinct URLs)."""
    if ("upstream" in entry) == ("upstreams" in entry):
        raise TableError(
            f"route of version '{version}' must have an 'upstream' URL or an 'upstreams' list"
        )
    if "upstream" in entry:
        given = [entry["upstream"]]
    else:
        given = entry["upstreams"]
        if not isinstance(given, list) or not 1 <= len(given) <= MAX_UPSTREAMS:
            raise TableError(
                f"'upstreams' of version '{version}' must be a list of 1 to {MAX_UPSTREAMS} URLs"
            )
    upstreams = tuple(_upstream(value, version) for value in given)
    if len(set(upstreams)) != len(upstreams):
        raise TableError(f"'upstreams' of version '{version}' lists a URL twice")
    return upstreams


def _upstream(upstream: Any, version: str) -> str:
    if not isinstance(upstream, str):
        raise TableError(f"route of version '{version}' must have an 'upstream' URL")
    try:
        parts = urlsplit(upstream)
        port = parts.port
    except ValueError:
        port = None
        parts = None
    if parts is None or parts.scheme != "http" or not parts.hostname or port is None:
        raise TableError(
            f"upstream of version '{version}' must look like http://host:port, not {upstream!r}"
        )
    if parts.path not in ("", "/") or parts.query:
        raise TableError(f"upstream of version '{version}' must have no path or query")
    return f"http://{parts.netloc}"


def parse_table(document: Any) -> RouteTable:
    """Validate a route table document and build the table."""
    if not isinstance(document, dict):
        raise TableError("the route table must be a JSON object")
    generation = document.get("generation")
    if isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
        raise TableError("'generation' must be a non-negative integer")
    sticky = document.get("sticky")
    sticky_header = sticky_cookie = None
    if sticky is not None:
        if not isinstance(sticky, dict) or len(sticky) != 1:
            raise TableError('\'sticky\' must be null, {"header": NAME} or {"cookie": NAME}')
        ((kind, name),) = sticky.items()
        if kind not in ("header", "cookie") or not isinstance(name, str) or not name:
            raise TableError('\'sticky\' must be null, {"header": NAME} or {"cookie": NAME}')
        if kind == "header":
            sticky_header = name
        else:
            sticky_cookie = name
    raw_routes = document.get("routes")
    if not isinstance(raw_routes, list):
        raise TableError("'routes' must be a list")
    routes = tuple(_route(entry, position) for position, entry in enumerate(raw_routes))
    versions = [route.version for route in routes]
    for version in versions:
        if versions.count(version) > 1:
            raise TableError(f"version '{version}' is routed more than once")
    served = [route for route in routes if route.role != "shadow"]
    total = sum(route.weight for route in served)
    if served and abs(total - 100) > 1e-9:
        raise TableError(f"weights of the primary and candidate routes sum to {total:g}, not 100")
    return RouteTable(generation, sticky_header, sticky_cookie, routes)
