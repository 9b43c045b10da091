"""A small keep-alive HTTP/1.1 client for the gateway: asyncio protocols parsed by httptools.

The gateway only ever talks to version servers it was told about, with small bodies and no
redirects, cookies, proxies or TLS; dropping all of that makes a proxied request several times
cheaper than a general-purpose client (see bench/RESULTS.md).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

# Idle connections kept per upstream; more concurrent requests open more, and extras are closed.
MAX_IDLE_CONNECTIONS = 64


class UpstreamDisconnected(ConnectionError):
    """The upstream closed the connection before a whole response arrived."""


@dataclass(slots=True)
class UpstreamResponse:
    """Status, lower-case headers and body of one upstream answer."""

    status: int
    headers: dict[bytes, bytes]
    body: bytes


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection; carries one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[UpstreamResponse] | None = None
        self.headers: dict[bytes, bytes] = {}
        self.chunks: list[bytes] = []
        self.closed = False
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """asyncio callback."""
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        """asyncio callback: feed the parser."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(UpstreamDisconnected(f"malformed response: {error}"))
            self.close()

    def connection_lost(self, error: Exception | None) -> None:
        """asyncio callback."""
        self.closed = True
        self._fail(UpstreamDisconnected("the upstream closed the connection"))

    def on_header(self, name: bytes, value: bytes) -> None:
        """httptools callback."""
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        """httptools callback."""
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        """httptools callback: the whole response is here."""
        self.keep_alive = self.parser.should_keep_alive()
        body = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        response = UpstreamResponse(self.parser.get_status_code(), self.headers, body)
        waiter = self.waiter
        self.waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def _fail(self, error: Exception) -> None:
        waiter = self.waiter
        self.waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def send(self, request: bytes) -> asyncio.Future[UpstreamResponse]:
        """Write one whole request; the future resolves with its response."""
        assert self.transport is not None and self.waiter is None
        self.headers = {}
        self.chunks = []
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.waiter

    def close(self) -> None:
        """Close the connection."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class UpstreamPool:
    """Keep-alive connections to one upstream, most recently used first."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.host_header = parts.netloc.encode()
        self.idle: list[UpstreamConnection] = []

    async def acquire(self) -> tuple[UpstreamConnection, bool]:
        """An idle connection (reused=True) or a new one."""
        while self.idle:
            connection = self.idle.pop()
            if not connection.closed:
                return connection, True
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(UpstreamConnection, self.host, self.port)
        return connection, False

    def release(self, connection: UpstreamConnection) -> None:
        """Keep a healthy connection for the next request, or close it."""
        if (
            connection.keep_alive
            and not connection.closed
            and len(self.idle) < MAX_IDLE_CONNECTIONS
        ):
            self.idle.append(connection)
        else:
            connection.close()

    def close(self) -> None:
        """Close every idle connection."""
        for connection in self.idle:
            connection.close()
        self.idle.clear()


class UpstreamClient:
    """Requests to any number of upstreams, each with its own pool."""

    def __init__(self) -> None:
        self.pools: dict[str, UpstreamPool] = {}
        # Requests sent and not yet answered, per upstream (the least-outstanding choice).
        self.outstanding: dict[str, int] = {}
        self.turn = 0

    async def request(
        self,
        upstream: str,
        method: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        timeout: float,
    ) -> UpstreamResponse:
        """Send one request and read its whole response within timeout seconds."""
        pool = self.pools.get(upstream)
        if pool is None:
            pool = self.pools[upstream] = UpstreamPool(upstream)
        head = [
            method.encode(),
            b" ",
            target,
            b" HTTP/1.1\r\nhost: ",
            pool.host_header,
            b"\r\ncontent-length: ",
            str(len(body)).encode(),
            b"\r\n",
        ]
        for name, value in headers:
            head += (name, b": ", value, b"\r\n")
        head.append(b"\r\n")
        request = b"".join(head) + body
        async with asyncio.timeout(timeout):
            for attempt in (1, 2):
                connection, reused = await pool.acquire()
                try:
                    response = await connection.send(request)
                except UpstreamDisconnected:
                    connection.close()
                    # A reused keep-alive connection may have been closed by the upstream just
                    # as we wrote to it; inference has no side effects, so retry once.
                    if reused and attempt == 1:
                        continue
                    raise
                except BaseException:
                    connection.close()
                    raise
                pool.release(connection)
                return response
        raise AssertionError("unreachable")

    def order(self, upstreams: tuple[str, ...]) -> list[str]:
        """The replicas to try for one request: fewest outstanding requests first, ties taken
        in turn (round-robin), so an idle set of replicas shares requests evenly and a slow
        replica gets fewer."""
        if len(upstreams) == 1:
            return list(upstreams)
        self.turn = (self.turn + 1) % len(upstreams)
        rotated = upstreams[self.turn :] + upstreams[: self.turn]
        return sorted(rotated, key=lambda upstream: self.outstanding.get(upstream, 0))

    async def request_any(
        self,
        upstreams: tuple[str, ...],
        method: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        timeout: float,
    ) -> UpstreamResponse:
        """Send one request to one replica of a route; when a replica refuses the connection or
        drops it unanswered (it is stopping, or crashed), the next one is tried within the same
        timeout. Inference has no side effects, so a second attempt is safe."""
        choices = self.order(upstreams)
        async with asyncio.timeout(timeout):
            for position, upstream in enumerate(choices):
                self.outstanding[upstream] = self.outstanding.get(upstream, 0) + 1
                try:
                    return await self.request(upstream, method, target, headers, body, timeout)
                except TimeoutError:
                    raise
                except OSError:
                    if position == len(choices) - 1:
                        raise
                finally:
                    self.outstanding[upstream] = self.outstanding.get(upstream, 1) - 1
        raise AssertionError("unreachable")

    def forget(self, keep: set[str]) -> None:
        """Close the idle connections to upstreams no longer routed (a replica scaled away);
        requests still in flight keep theirs."""
        for upstream in [upstream for upstream in self.pools if upstream not in keep]:
            self.pools.pop(upstream).close()
            if not self.outstanding.get(upstream):
                self.outstanding.pop(upstream, None)

    def close(self) -> None:
        """Close every pooled connection."""
        for pool in self.pools.values():
            pool.close()
