"""A small HTTP/1.1 server for the runtime's ASGI apps: httptools parsing, one write per response.

uvicorn writes a response's head and body with two socket writes; on a loopback or virtualised
network each write costs as much as a small inference, so this server buffers a response and
writes it once (see bench/RESULTS.md). It implements what the runtime needs and no more: HTTP/1.1
keep-alive and pipelining, chunked and Content-Length request bodies, `Expect: 100-continue`, a
body cap, idle timeouts, the lifespan protocol and a graceful drain on SIGTERM.

An app may also offer the direct interface (`DirectApp`): the server hands it each fully
received request and a function to write the answer with. An app that can answer without
waiting (the version server's small inferences) then answers inside the parser's callback: no
task, scope or ASGI messages per request, which is most of what a small request costs besides
the model. Apps without it (the gateway) are served over ASGI.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, runtime_checkable
from urllib.parse import unquote

import httptools
import orjson

logger = logging.getLogger("modeldeck.http")

App = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]
# write(status, headers, body): the server adds Content-Length (and Connection: close).
Write = Callable[[int, Headers, bytes], None]


@runtime_checkable
class DirectApp(Protocol):
    """An ASGI app that also answers whole requests directly (see the module docstring)."""

    def answer(
        self, method: str, path: str, headers: Headers, body: bytes | None, write: Write
    ) -> Awaitable[None] | None:
        """Answer one request by calling write once: before returning, or by the time the
        returned awaitable is done. body is None when it was larger than the server's cap."""


REASONS = {
    100: b"Continue",
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    409: b"Conflict",
    413: b"Content Too Large",
    414: b"URI Too Long",
    415: b"Unsupported Media Type",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    507: b"Insufficient Storage",
}
STATUS_LINES = {
    status: b"HTTP/1.1 %d %s\r\n" % (status, reason) for status, reason in REASONS.items()
}
# Pipelined requests beyond this many pause reading until the queue drains.
MAX_QUEUED_REQUESTS = 32
INTERNAL_ERROR = b'{"error":"internal server error"}'


@dataclass(frozen=True)
class Limits:
    """What one anonymous client may make the server hold or wait for.

    Every byte of a request head is held until the head is complete, so the request line and
    the headers are bounded; a client that sends its head slowly (slowloris) is cut off after
    header_timeout seconds however steadily it trickles; an idle keep-alive connection is
    closed after idle_timeout; connections beyond max_connections are answered 503 and closed.
    """

    max_request_line_bytes: int = 8 * 1024
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    idle_timeout: float = 75.0
    max_connections: int = 1024


class _HeadRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class _Request:
    method: str
    target: bytes
    headers: list[tuple[bytes, bytes]]
    http_version: str
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    complete: bool = False
    keep_alive: bool = True
    answered: bool = False


class _Connection(asyncio.Protocol):
    """One client connection: parses requests, runs them one after another, writes answers."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.client: tuple[str, int] | None = None
        self.local: tuple[str, int] | None = None
        self.limits = server.limits
        self.target_parts: list[bytes] = []
        self.target_size = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0
        # Inside a request head (from its first byte to its blank line), the bytes received
        # after the read it began in, and whether a head began in the current read.
        self.in_head = False
        self.head_bytes = 0
        self.began = False
        self.header_timer: asyncio.TimerHandle | None = None
        self.request: _Request | None = None
        self.queue: deque[_Request] = deque()
        self.running = False
        self.closed = False
        self.closing = False
        self.reading = True
        self.loop = asyncio.get_running_loop()
        # One idle timer per connection, re-armed lazily: a request only notes the time it
        # finished (or that it is busy), instead of cancelling and scheduling a timer each time.
        self.idle_timer: asyncio.TimerHandle | None = None
        self.idle_since: float | None = None
        self.disconnected = self.loop.create_future()

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Register the connection and arm its idle timer."""
        self.transport = transport  # type: ignore[assignment]
        self.client = transport.get_extra_info("peername")
        self.local = transport.get_extra_info("sockname")
        if len(self.server.connections) >= self.limits.max_connections:
            self._reject(503, b'{"error":"too many connections; try again later"}')
            return
        self.server.connections.add(self)
        self._arm_idle_timer()

    def connection_lost(self, error: Exception | None) -> None:
        """Forget the connection; a running request sees http.disconnect."""
        self.closed = True
        self.server.connections.discard(self)
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        self._cancel_header_timer()
        if not self.disconnected.done():
            self.disconnected.set_result(None)

    def data_received(self, data: bytes) -> None:
        """Feed the parser."""
        if self.closed:
            return
        self._cancel_idle_timer()
        self.began = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, b'{"error":"protocol upgrades are not supported"}')
        except httptools.HttpParserCallbackError as error:
            refused = error.__context__ or error.__cause__
            if not isinstance(refused, _HeadRefused):
                raise
            self._reject(refused.status, orjson.dumps({"error": refused.message}))
        except httptools.HttpParserError:
            self._reject(400, b'{"error":"malformed HTTP request"}')
        if self.in_head and not self.closed:
            if not self.began:
                # The head began before this data, so all of it belongs to the head: httptools
                # holds it until the head completes. (The chunk a head begins in is not counted:
                # the bound is the limit plus one read.)
                self.head_bytes += len(data)
                if (
                    self.head_bytes
                    > self.limits.max_request_line_bytes + self.limits.max_header_bytes
                ):
                    self._reject(431, self._too_large_head())
            if self.header_timer is None and not self.closed:
                self.header_timer = self.loop.call_later(
                    self.limits.header_timeout, self._head_timed_out
                )
        if not self.running and not self.closed:
            # a request still arriving gets the idle timeout between its packets
            self._arm_idle_timer()

    # httptools callbacks

    def on_message_begin(self) -> None:
        """A new request starts."""
        self.target_parts = []
        self.target_size = 0
        self.headers = []
        self.header_bytes = 0
        self.head_bytes = 0
        self.in_head = True
        self.began = True

    def on_url(self, url: bytes) -> None:
        """Part of the request target (httptools may deliver it in pieces)."""
        self.target_size += len(url)
        if self.target_size > self.limits.max_request_line_bytes:
            raise _HeadRefused(
                414,
                f"the request target is longer than the limit of "
                f"{self.limits.max_request_line_bytes} bytes",
            )
        self.target_parts.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        """One header, names lower-cased as in ASGI."""
        self.header_bytes += len(name) + len(value) + 4
        if len(self.headers) >= self.limits.max_headers:
            raise _HeadRefused(
                431, f"the request has more than the limit of {self.limits.max_headers} headers"
            )
        if self.header_bytes > self.limits.max_header_bytes:
            raise _HeadRefused(431, self._too_large_head().decode())
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        """The request head is complete."""
        self.in_head = False
        self._cancel_header_timer()
        request = _Request(
            method=self.parser.get_method().decode(),
            target=b"".join(self.target_parts),
            headers=self.headers,
            http_version=self.parser.get_http_version(),
            keep_alive=self.parser.should_keep_alive(),
        )
        self.request = request
        for name, value in self.headers:
            if name == b"expect" and value.lower() == b"100-continue" and self.transport:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        """Keep body data up to just past the cap; the app answers 413 when it sees more."""
        request = self.request
        if request is None or request.size > self.server.max_body_bytes:
            return
        request.chunks.append(body)
        request.size += len(body)
        if request.size > self.server.max_body_bytes:
            # Answer now; the rest of this body is read and dropped.
            self._enqueue(request)

    def on_message_complete(self) -> None:
        """The request is complete."""
        request = self.request
        if request is None:
            return
        request.complete = True
        self.request = None
        if request.size <= self.server.max_body_bytes:
            self._enqueue(request)

    # request handling

    def _enqueue(self, request: _Request) -> None:
        if self.closed:
            return
        self.queue.append(request)
        if len(self.queue) > MAX_QUEUED_REQUESTS and self.reading and self.transport:
            self.transport.pause_reading()
            self.reading = False
        if not self.running:
            if self.server.direct is not None:
                self._next()
            else:
                self.running = True
                self.loop.create_task(self._run_queue())

    async def _run_queue(self) -> None:
        """Run queued requests through the ASGI app, one after another."""
        try:
            while self.queue and not self.closed:
                request = self._pop()
                keep_alive = await self._run(request)
                if not keep_alive or (self.closing and not self.queue):
                    self.close()
                    return
        finally:
            self.running = False
        self._idle()

    def _next(self) -> None:
        """Answer queued requests through the direct app, in order, until one is answered
        later; its completion calls this again."""
        while self.queue and not self.closed:
            request = self._pop()
            keep_alive = self._answer(request)
            if keep_alive is None:
                self.running = True
                return
            if not keep_alive or (self.closing and not self.queue):
                self.close()
                return
        self._idle()

    def _pop(self) -> _Request:
        request = self.queue.popleft()
        if not self.reading and len(self.queue) <= MAX_QUEUED_REQUESTS // 2:
            self.reading = True
            if self.transport:
                self.transport.resume_reading()
        return request

    def _idle(self) -> None:
        if not self.closed:
            if self.closing:
                self.close()
            else:
                self._arm_idle_timer()

    def _answer(self, request: _Request) -> bool | None:
        """Hand a request to the direct app: whether to keep the connection once answered, or
        None when the app answers later (then `_answered_later` runs when it has)."""
        assert self.server.direct is not None
        path = request.target.partition(b"?")[0]
        chunks = request.chunks
        body = None
        if request.size <= self.server.max_body_bytes:
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        request.chunks = []
        self.server.in_flight += 1
        try:
            pending = self.server.direct(
                request.method,
                unquote(path.decode("latin-1")),
                request.headers,
                body,
                partial(self._write_once, request),
            )
        except Exception:
            self.server.in_flight -= 1
            logger.exception("unhandled error in %s %s", request.method, path)
            self._write_once(request, 500, [(b"content-type", b"application/json")], INTERNAL_ERROR)
            return False
        if pending is None:
            self.server.in_flight -= 1
            return request.answered and request.keep_alive and not self.server.exiting
        # A future (a batched inference) completes without a task of its own; a coroutine
        # (work on a thread, sibling workers' metrics) runs as one.
        asyncio.ensure_future(pending).add_done_callback(partial(self._answered_later, request))
        return None

    def _answered_later(self, request: _Request, pending: asyncio.Future[None]) -> None:
        self.server.in_flight -= 1
        self.running = False
        failed = pending.cancelled() or pending.exception() is not None
        if failed:
            if not pending.cancelled():
                logger.error(
                    "unhandled error in %s %s",
                    request.method,
                    request.target.partition(b"?")[0],
                    exc_info=pending.exception(),
                )
            self._write_once(request, 500, [(b"content-type", b"application/json")], INTERNAL_ERROR)
        keep_alive = (
            not failed and request.answered and request.keep_alive and not self.server.exiting
        )
        if not keep_alive or (self.closing and not self.queue):
            self.close()
            return
        self._next()

    def _write_once(self, request: _Request, status: int, headers: Headers, body: bytes) -> None:
        if not request.answered:
            request.answered = True
            self._write(request, status, headers, body)

    async def _run(self, request: _Request) -> bool:
        path, _, query = request.target.partition(b"?")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": request.http_version,
            "server": self.local,
            "client": self.client,
            "scheme": "http",
            "method": request.method,
            "root_path": "",
            "path": unquote(path.decode("latin-1")),
            "raw_path": path,
            "query_string": query,
            "headers": request.headers,
        }
        body_sent = False
        start: dict[str, Any] | None = None
        parts: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                chunks = request.chunks
                body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                request.chunks = []
                return {"type": "http.request", "body": body, "more_body": False}
            await self.disconnected
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body" and start is not None:
                parts.append(message.get("body", b""))
                if not message.get("more_body", False):
                    self._write(request, start["status"], start.get("headers", []), b"".join(parts))

        self.server.in_flight += 1
        try:
            await self.server.app(scope, receive, send)
        except Exception:
            logger.exception("unhandled error in %s %s", request.method, scope["path"])
            if start is None:
                self._write(request, 500, [(b"content-type", b"application/json")], INTERNAL_ERROR)
            return False
        finally:
            self.server.in_flight -= 1
        if start is None:
            return False
        # A request answered before its body arrived (413) is kept alive only if the rest of
        # the body is still read and dropped by the parser, which it is.
        return request.keep_alive and not self.server.exiting

    def _write(self, request: _Request, status: int, headers: Headers, body: bytes) -> None:
        if self.transport is None or self.closed:
            return
        head = [STATUS_LINES.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status]
        has_length = False
        for name, value in headers:
            if name.lower() == b"content-length":
                has_length = True
                if int(value) != len(body):
                    value = str(len(body)).encode()
            head += (name, b": ", value, b"\r\n")
        if not has_length:
            head.append(b"content-length: %d\r\n" % len(body))
        if not request.keep_alive or self.server.exiting:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        if request.method != "HEAD":
            head.append(body)
        self.transport.write(b"".join(head))

    def _reject(self, status: int, body: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                b"connection: close\r\n\r\n%s" % (status, REASONS[status], len(body), body)
            )
        self.close()

    def _too_large_head(self) -> bytes:
        return orjson.dumps(
            {
                "error": f"the request headers are larger than the limit of "
                f"{self.limits.max_header_bytes} bytes"
            }
        )

    def _head_timed_out(self) -> None:
        self.header_timer = None
        if self.in_head:
            self._reject(408, b'{"error":"the request head did not arrive in time"}')

    def _cancel_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    # lifecycle

    def _arm_idle_timer(self) -> None:
        self.idle_since = self.loop.time()
        if self.idle_timer is None:
            self.idle_timer = self.loop.call_later(self.limits.idle_timeout, self._idle_check)

    def _cancel_idle_timer(self) -> None:
        self.idle_since = None

    def _idle_check(self) -> None:
        self.idle_timer = None
        if self.closed:
            return
        if self.idle_since is None:
            # busy now: look again one timeout later
            self.idle_timer = self.loop.call_later(self.limits.idle_timeout, self._idle_check)
            return
        remaining = self.idle_since + self.limits.idle_timeout - self.loop.time()
        if remaining <= 0:
            self.close()
        else:
            self.idle_timer = self.loop.call_later(remaining, self._idle_check)

    def shutdown(self) -> None:
        """Close now if idle, else after the requests already received."""
        self.closing = True
        if not self.running and self.request is None:
            self.close()

    def close(self) -> None:
        """Close the connection."""
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        self._cancel_header_timer()
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()


class HttpServer:
    """Serve one ASGI app on host:port until SIGTERM or SIGINT, then drain and stop."""

    def __init__(
        self,
        app: App,
        *,
        host: str,
        port: int,
        max_body_bytes: int,
        limits: Limits | None = None,
        drain_seconds: float = 30.0,
        reuse_port: bool = False,
        unix_path: str | None = None,
    ) -> None:
        self.app = app
        # Whole requests go to the app's direct interface when it has one (module docstring).
        self.direct = app.answer if isinstance(app, DirectApp) else None
        self.host = host
        self.port = port
        self.max_body_bytes = max_body_bytes
        self.limits = limits or Limits()
        # Several worker processes share one port (SO_REUSEPORT; the kernel spreads new
        # connections); each also listens on a private unix socket its siblings reach it by.
        self.reuse_port = reuse_port
        self.unix_path = unix_path
        self.drain_seconds = drain_seconds
        self.connections: set[_Connection] = set()
        self.in_flight = 0
        self.exiting = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.exit_requested: asyncio.Event | None = None
        self.failed = False

    def request_exit(self) -> None:
        """Ask the server to drain and stop; safe to call from any thread."""
        if self.loop is not None and self.exit_requested is not None:
            self.loop.call_soon_threadsafe(self.exit_requested.set)

    def run(self) -> int:
        """Run until stopped; the exit status is 0 after a clean drain."""
        try:
            import uvloop
        except ImportError:
            return asyncio.run(self.serve())
        return uvloop.run(self.serve())

    async def serve(self) -> int:
        """Start the app's lifespan, listen, wait for a stop signal, drain, stop the lifespan."""
        self.loop = asyncio.get_running_loop()
        self.exit_requested = asyncio.Event()
        lifespan = _Lifespan(self.app)
        if not await lifespan.startup():
            return 1
        listeners = [
            await self.loop.create_server(
                lambda: _Connection(self),
                self.host,
                self.port,
                backlog=2048,
                reuse_address=True,
                reuse_port=self.reuse_port or None,
            )
        ]
        if self.unix_path is not None:
            listeners.append(
                await self.loop.create_unix_server(lambda: _Connection(self), self.unix_path)
            )
        for number in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(number, self.exit_requested.set)
        logger.info("listening on http://%s:%d", self.host, self.port)
        await self.exit_requested.wait()
        self.exiting = True
        for listener in listeners:
            listener.close()
        for connection in list(self.connections):
            connection.shutdown()
        deadline = self.loop.time() + self.drain_seconds
        while (self.connections or self.in_flight) and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        for connection in list(self.connections):
            connection.close()
        await lifespan.shutdown()
        return 1 if self.failed else 0


class _Lifespan:
    """Drives the ASGI lifespan protocol of an app."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def startup(self) -> bool:
        """Run the app's startup; False if it failed."""
        self.task = asyncio.get_running_loop().create_task(
            self.app({"type": "lifespan"}, self.inbox.get, self.outbox.put)
        )
        await self.inbox.put({"type": "lifespan.startup"})
        message = await self.outbox.get()
        if message["type"] != "lifespan.startup.complete":
            logger.error("startup failed: %s", message.get("message", ""))
            return False
        return True

    async def shutdown(self) -> None:
        """Run the app's shutdown."""
        await self.inbox.put({"type": "lifespan.shutdown"})
        await self.outbox.get()
