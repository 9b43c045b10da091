"""The gateway: one per endpoint, splitting, pinning and mirroring traffic to version servers."""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np
import orjson

from modeldeck_runtime import keys
from modeldeck_runtime.asgi import (
    JSON_TYPE,
    ClientDisconnected,
    Headers,
    Receive,
    Scope,
    Send,
    compress_response,
    decode_body,
    error_body,
    header,
    read_body,
    request_id,
    respond,
    run_lifespan,
)
from modeldeck_runtime.codec import (
    RequestError,
    decode_infer_response,
    decode_invocation_response,
    load_json,
)
from modeldeck_runtime.metrics import CONTENT_TYPE, ServingMetrics
from modeldeck_runtime.predlog import PredictionLog
from modeldeck_runtime.routing import (
    EMPTY_TABLE,
    Route,
    RouteTable,
    TableError,
    parse_table,
    sticky_point,
)
from modeldeck_runtime.upstream import UpstreamClient, UpstreamResponse
from modeldeck_runtime.versions import resolve_version, split_versioned_path

logger = logging.getLogger("modeldeck.gateway")

ADMIN_BODY_LIMIT = 1 << 20
READY_TIMEOUT_SECONDS = 2.0
RELATIVE_TOLERANCE = 1e-6

# Paths the gateway answers itself (GET and HEAD, as the version servers do).
LOCAL_GET_PATHS = frozenset(("/v2/health/live", "/v2/health/ready", "/-/health", "/metrics"))
# Request headers the version servers need; everything else stays at the gateway.
FORWARDED_HEADERS = (b"content-type", b"inference-header-content-length", b"content-encoding")
# Response headers passed back to the caller.
RETURNED_HEADERS = (b"content-type", b"inference-header-content-length", b"content-encoding")


@dataclass(frozen=True)
class GatewaySettings:
    """Everything the gateway is told at start."""

    admin_token: str
    endpoint: str = ""
    routes_file: Path | None = None
    state_file: Path | None = None
    upstream_timeout: float = 30.0
    shadow_timeout: float = 5.0
    max_body_bytes: int = 32 * 1024 * 1024
    max_pending_shadows: int = 256
    # The dashboard's ingest URL for the prediction log (empty: no log); the admin token is the
    # endpoint's own token, so it also authenticates the log.
    prediction_log_url: str = ""
    prediction_log_flush_seconds: float = 1.0


def load_initial_table(settings: GatewaySettings) -> RouteTable:
    """The saved state if there is one, else the routes file, else an empty table."""
    for path in (settings.state_file, settings.routes_file):
        if path is not None and path.exists():
            try:
                return parse_table(orjson.loads(path.read_bytes()))
            except (orjson.JSONDecodeError, TableError) as error:
                raise ValueError(f"{path}: {error}") from None
    return EMPTY_TABLE


def save_table(path: Path, document: dict[str, Any]) -> None:
    """Write the table so that a reader sees the old file or the new one, never a mix."""
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as handle:
        handle.write(orjson.dumps(document, option=orjson.OPT_INDENT_2))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def compare_answers(
    primary: dict[str, np.ndarray], shadow: dict[str, np.ndarray]
) -> tuple[bool, float | None]:
    """Whether a shadow agrees with the caller's answer, and the largest absolute difference.

    The first output decides: labels must be equal, per-class scores must share their argmax,
    single values must agree within a relative 1e-6.
    """
    if not primary:
        return False, None
    name = next(iter(primary))
    expected = primary[name]
    actual = shadow.get(name)
    if actual is None or actual.shape != expected.shape:
        return False, None
    if expected.dtype.kind != "f" or actual.dtype.kind != "f":
        # labels (integers, strings, booleans) agree or not; a difference means nothing
        return bool(np.array_equal(expected, actual)), None
    expected64 = expected.astype(np.float64)
    actual64 = actual.astype(np.float64)
    absolute = np.abs(expected64 - actual64)
    difference = float(np.max(absolute, initial=0.0))
    if expected.ndim >= 2 and expected.shape[-1] > 1:
        agreed = np.array_equal(expected64.argmax(axis=-1), actual64.argmax(axis=-1))
        return bool(agreed), difference
    scale = np.maximum(np.abs(expected64), np.abs(actual64))
    agreed = bool(np.all(absolute <= RELATIVE_TOLERANCE * scale + 1e-12))
    return agreed, difference


class Gateway:
    """ASGI app in front of the version servers of one endpoint."""

    def __init__(self, settings: GatewaySettings, table: RouteTable | None = None) -> None:
        self.settings = settings
        self.table = table if table is not None else load_initial_table(settings)
        self.access = keys.load_access(settings.state_file, settings.routes_file)
        self.metrics = ServingMetrics(endpoint=settings.endpoint, component="gateway")
        self.authorization = f"Bearer {settings.admin_token}".encode()
        self.random = random.Random()
        self.client = UpstreamClient()
        self.shadow_tasks: set[asyncio.Task[None]] = set()
        self.prediction_log = (
            PredictionLog(
                url=settings.prediction_log_url,
                token=settings.admin_token,
                flush_seconds=settings.prediction_log_flush_seconds,
            )
            if settings.prediction_log_url
            else None
        )

    async def _startup(self) -> None:
        if self.prediction_log is not None:
            self.prediction_log.start()

    async def _shutdown(self) -> None:
        # Shadows are best effort: a drain waits for callers, not for mirrored copies.
        for task in list(self.shadow_tasks):
            task.cancel()
        if self.shadow_tasks:
            await asyncio.gather(*self.shadow_tasks, return_exceptions=True)
        if self.prediction_log is not None:
            await self.prediction_log.stop()
        self.client.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] == "http":
            await self.handle(scope, receive, send)
        elif scope["type"] == "lifespan":
            await run_lifespan(receive, send, self._startup, self._shutdown)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one HTTP request."""
        headers: Headers = scope["headers"]
        identifier = request_id(header(headers, b"x-request-id"))
        response_headers = [JSON_TYPE, (b"x-request-id", identifier.encode())]
        path = scope["path"]
        try:
            if path in LOCAL_GET_PATHS:
                status, body = await self._local_get(scope, path, response_headers)
            elif path == "/invocations" or path == "/v2" or path.startswith("/v2/"):
                keys.require_key(self.access, headers)
                await self.proxy(scope, receive, send, identifier, response_headers)
                return
            elif path == "/-/routes":
                status, body = await self._admin(scope, receive, headers)
            else:
                raise RequestError(f"no route for {path}", 404)
        except RequestError as error:
            status, body = error.status, error_body(error.message)
        except ClientDisconnected:
            return
        version = self.table.primary_version
        if version is not None:
            response_headers.append((b"x-model-version", version.encode()))
        await respond(send, status, body, response_headers)

    async def _local_get(
        self, scope: Scope, path: str, response_headers: Headers
    ) -> tuple[int, bytes]:
        """Health and metrics, answered by the gateway itself: GET and HEAD only, as the servers."""
        if scope["method"] not in ("GET", "HEAD"):
            response_headers.append((b"allow", b"GET, HEAD"))
            raise RequestError(f"method {scope['method']} is not allowed on {path}", 405)
        if path == "/metrics":
            response_headers[0] = (b"content-type", CONTENT_TYPE.encode())
            return 200, self.metrics.render() + self._replica_metrics()
        if path in ("/v2/health/live", "/-/health"):
            return 200, b'{"live":true}'
        answers = await asyncio.gather(*(self._upstream_ready(route) for route in self.table.live))
        if any(answers):
            return 200, b'{"ready":true}'
        return 503, b'{"ready":false}'

    async def _upstream_ready(self, route: Route) -> bool:
        try:
            response = await self.client.request_any(
                route.upstreams, "GET", b"/v2/health/ready", [], b"", READY_TIMEOUT_SECONDS
            )
        except (TimeoutError, OSError):
            return False
        return response.status == 200

    async def _admin(self, scope: Scope, receive: Receive, headers: Headers) -> tuple[int, bytes]:
        supplied = header(headers, b"authorization") or b""
        if not hmac.compare_digest(supplied, self.authorization):
            raise RequestError("a valid admin token is required (Authorization: Bearer ...)", 401)
        method = scope["method"]
        if method == "GET":
            return 200, orjson.dumps(keys.with_access(self.table.document(), self.access))
        if method != "PUT":
            raise RequestError(f"method {method} is not allowed on /-/routes", 405)
        document = load_json(await read_body(headers, receive, ADMIN_BODY_LIMIT))
        try:
            table = parse_table(document)
            access = keys.parse_access(document)
        except (TableError, keys.AccessError) as error:
            raise RequestError(str(error)) from None
        current = self.table
        if table.generation < current.generation:
            raise RequestError(
                f"generation {table.generation} is older than the current generation "
                f"{current.generation}; the table was not changed",
                409,
            )
        saved = keys.with_access(table.document(), access)
        if self.settings.state_file is not None:
            try:
                save_table(self.settings.state_file, saved)
            except OSError as error:
                raise RequestError(f"could not save the route table: {error}", 500) from None
        # One reference swap each: requests that already picked a route keep it.
        self.access = access
        self.table = table
        self._forget_unrouted(table)
        logger.info("route table generation %d is live", table.generation)
        return 200, orjson.dumps(saved)

    def _forget_unrouted(self, table: RouteTable) -> None:
        """Drop idle connections to replicas the new table no longer routes to."""
        self.client.forget({upstream for route in table.routes for upstream in route.upstreams})

    def _replica_metrics(self) -> bytes:
        """How many replicas each routed version is balanced across (a gauge)."""
        name = "modeldeck_gateway_route_replicas"
        lines = [f"# HELP {name} Replicas the gateway balances a version's share across.",
                 f"# TYPE {name} gauge"]  # fmt: skip
        for route in self.table.routes:
            version = route.version.replace("\\", "\\\\").replace('"', '\\"')
            lines.append(
                f'{name}{{version="{version}",role="{route.role}"}} {len(route.upstreams)}'
            )
        return ("\n".join(lines) + "\n").encode()

    def _pick(self, table: RouteTable, headers: Headers) -> Route:
        pinned = header(headers, b"x-model-version")
        if pinned is not None:
            version = pinned.decode(errors="replace").strip()
            route = table.by_version.get(version)
            if route is None:
                routed = ", ".join(table.by_version) or "none"
                raise RequestError(
                    f"version '{version}' is not routed on this endpoint; "
                    f"routed versions: {routed}",
                    404,
                )
            return route
        key = self._sticky_key(table, headers)
        point = self.random.random() if key is None else sticky_point(key, self.settings.endpoint)
        route = table.choose(point)
        if route is None:
            raise RequestError("this endpoint has no live routes", 503)
        return route

    @staticmethod
    def _named_route(table: RouteTable, path: str, headers: Headers) -> Route | None:
        """The route of the version a request names (versioned path or X-Model-Version).

        A version is named by number (`2`) or full reference (`model:2`); None when the request
        names none, so the weighted choice applies.
        """
        versioned = split_versioned_path(path)
        if versioned is not None:
            requested = versioned[1]
        else:
            pinned = header(headers, b"x-model-version")
            if pinned is None:
                return None
            requested = pinned.decode(errors="replace").strip()
        matches = resolve_version(requested, table.by_version)
        if len(matches) == 1:
            return table.by_version[matches[0]]
        if matches:
            raise RequestError(
                f"version '{requested}' is ambiguous on this endpoint; name one of: "
                + ", ".join(matches),
                404,
            )
        routed = ", ".join(table.by_version) or "none"
        raise RequestError(
            f"version '{requested}' is not routed on this endpoint; routed versions: {routed}",
            404,
        )

    @staticmethod
    def _sticky_key(table: RouteTable, headers: Headers) -> str | None:
        if table.sticky_header is not None:
            value = header(headers, table.sticky_header.lower().encode())
            return value.decode(errors="replace") if value else None
        if table.sticky_cookie is not None:
            cookies = header(headers, b"cookie")
            if cookies:
                for pair in cookies.decode(errors="replace").split(";"):
                    name, _, value = pair.strip().partition("=")
                    if name == table.sticky_cookie and value:
                        return value
        return None

    async def proxy(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        identifier: str,
        response_headers: Headers,
    ) -> None:
        """Forward one request to the route it is assigned to, and maybe mirror it to shadows."""
        started = perf_counter()
        headers: Headers = scope["headers"]
        method = scope["method"]
        path = scope["path"]
        # One snapshot of the table per request: a concurrent swap never splits a request.
        table = self.table
        route = self._named_route(table, path, headers) or self._pick(table, headers)
        inference = method == "POST" and (path == "/invocations" or path.endswith("/infer"))
        series = self.metrics.variant(route.version, route.role) if inference else None
        if series is not None:
            series.in_flight += 1
        status = 502
        body = b""
        response = None
        try:
            try:
                body = await read_body(headers, receive, self.settings.max_body_bytes)
            except RequestError as error:
                status = error.status
                raise
            forward = [(b"x-request-id", identifier.encode())]
            for name in FORWARDED_HEADERS:
                value = header(headers, name)
                if value is not None:
                    forward.append((name, value))
            target = scope.get("raw_path") or path.encode()
            if scope.get("query_string"):
                target += b"?" + scope["query_string"]
            try:
                response = await self.client.request_any(
                    route.upstreams,
                    # A HEAD answer has no body to read: ask with GET, the caller gets the head.
                    "GET" if method == "HEAD" else method,
                    target,
                    forward,
                    body,
                    self.settings.upstream_timeout,
                )
            except TimeoutError:
                status = 504
                raise RequestError(
                    f"version '{route.version}' did not answer within "
                    f"{self.settings.upstream_timeout:g} seconds",
                    504,
                ) from None
            except OSError as error:
                status = 502
                raise RequestError(
                    f"version '{route.version}' is unreachable: {error}", 502
                ) from None
            status = response.status
            payload = response.body
            response_headers.clear()
            for name in RETURNED_HEADERS:
                value = response.headers.get(name)
                if value is not None:
                    response_headers.append((name, value))
            response_headers.append((b"x-request-id", identifier.encode()))
            version = response.headers.get(b"x-model-version", route.version.encode())
            response_headers.append((b"x-model-version", version))
        except RequestError as error:
            payload = error_body(error.message)
            response_headers.append((b"x-model-version", route.version.encode()))
        except ClientDisconnected:
            status = 499
            payload = None
        if series is not None:
            series.in_flight -= 1
        if payload is not None:
            # Version servers answer uncompressed (Accept-Encoding stays here), so shadows and the
            # prediction log read their answers; the caller gets the coding it asked for.
            await respond(
                send,
                status,
                compress_response(headers, payload, response_headers),
                response_headers,
            )
        if series is not None:
            series.record_request(status, perf_counter() - started)
        if inference and self.prediction_log is not None and payload is not None:
            log = self.prediction_log
            log.record(
                request_id=identifier,
                version=route.version,
                role=route.role,
                status=status,
                latency=perf_counter() - started,
                invocation=path == "/invocations",
                body=payload if status == 200 else None,
                header_length=_length(response) if response is not None else None,
                inputs=self._logged_inputs(headers, body) if body and log.wants_inputs() else None,
            )
        if inference and status == 200 and table.shadows:
            self._mirror(table, route, target, forward, body, response, identifier)

    def _logged_inputs(self, headers: Headers, body: bytes) -> bytes | None:
        """The request body as the prediction log reads it (compressed bodies inflated)."""
        try:
            return decode_body(headers, body, self.settings.max_body_bytes)
        except RequestError:
            return None

    def _mirror(
        self,
        table: RouteTable,
        route: Route,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        primary: UpstreamResponse,
        identifier: str = "",
    ) -> None:
        for shadow in table.shadows:
            if shadow.version == route.version:
                continue
            if self.random.random() * 100 >= shadow.mirror_percent:
                continue
            if len(self.shadow_tasks) >= self.settings.max_pending_shadows:
                self.metrics.shadow_dropped += 1
                continue
            task = asyncio.create_task(
                self._shadow(shadow, route.version, target, headers, body, primary, identifier)
            )
            self.shadow_tasks.add(task)
            task.add_done_callback(self.shadow_tasks.discard)

    async def _shadow(
        self,
        shadow: Route,
        primary_version: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        primary: UpstreamResponse,
        identifier: str = "",
    ) -> None:
        series = self.metrics.variant(shadow.version, "shadow")
        series.in_flight += 1
        started = perf_counter()
        response = None
        try:
            response = await self.client.request_any(
                shadow.upstreams, "POST", target, headers, body, self.settings.shadow_timeout
            )
            status = response.status
        except TimeoutError:
            status = 504
        except OSError:
            status = 502
        finally:
            series.in_flight -= 1
        series.record_request(status, perf_counter() - started)
        if self.prediction_log is not None:
            # Logged under the caller's request id, so the shadow's answer is compared with the
            # primary's one by one (and joined to the same feedback).
            self.prediction_log.record(
                request_id=identifier,
                version=shadow.version,
                role="shadow",
                status=status,
                latency=perf_counter() - started,
                invocation=target.split(b"?")[0].endswith(b"/invocations"),
                body=response.body if response is not None and status == 200 else None,
                header_length=_length(response) if response is not None else None,
            )
        if response is None or status != 200:
            return
        try:
            if target.split(b"?")[0].endswith(b"/invocations"):
                expected = decode_invocation_response(primary.body)
                actual = decode_invocation_response(response.body)
            else:
                expected = decode_infer_response(primary.body, _length(primary))
                actual = decode_infer_response(response.body, _length(response))
            agreed, difference = compare_answers(expected, actual)
        except (ValueError, KeyError, TypeError):
            agreed, difference = False, None
        comparison = self.metrics.shadow(shadow.version, primary_version)
        if agreed:
            comparison.agreed += 1
        else:
            comparison.disagreed += 1
        if difference is not None:
            comparison.difference.observe(difference)


def _length(response: UpstreamResponse) -> int | None:
    value = response.headers.get(b"inference-header-content-length")
    return int(value) if value is not None else None
