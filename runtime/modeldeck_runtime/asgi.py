"""Small helpers for raw ASGI apps: headers, request ids, bounded body reading, responses."""

from __future__ import annotations

import random
import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from modeldeck_runtime.codec import RequestError

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,128}")
# Request ids need uniqueness, not secrecy: a seeded Mersenne Twister is several times cheaper
# per request than uuid.uuid4(), which reads os.urandom each time.
_RANDOM = random.Random()
_VERSION_4 = (0xF << 76) | (0x3 << 62)
_VERSION_4_BITS = (0x4 << 76) | (0x2 << 62)
JSON_TYPE = (b"content-type", b"application/json")


class ClientDisconnected(Exception):
    """The client went away before sending its whole request."""


def header(headers: Headers, name: bytes) -> bytes | None:
    """The first value of a (lower-case) header, or None."""
    for key, value in headers:
        if key == name:
            return value
    return None


def request_id(value: bytes | None) -> str:
    """Echo a sane client request id, or make a new one."""
    if value is not None and _SANE_REQUEST_ID.fullmatch(value):
        return value.decode()
    return f"{_RANDOM.getrandbits(128) & ~_VERSION_4 | _VERSION_4_BITS:032x}"


async def read_body(headers: Headers, receive: Receive, limit: int) -> bytes:
    """Read the request body, refusing with 413 as soon as it exceeds limit bytes."""
    too_large = RequestError(f"request body is larger than the limit of {limit} bytes", 413)
    declared = header(headers, b"content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise RequestError("Content-Length is not a number") from None
        if length > limit:
            raise too_large
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def respond(send: Send, status: int, body: bytes, headers: Headers) -> None:
    """Send a whole response with its Content-Length."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


def error_body(message: str) -> bytes:
    """The JSON body of every error answer."""
    return orjson.dumps({"error": message})


async def run_lifespan(
    receive: Receive,
    send: Send,
    startup: Callable[[], Awaitable[None]],
    shutdown: Callable[[], Awaitable[None]],
) -> None:
    """Answer the ASGI lifespan protocol with the given startup and shutdown steps."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await startup()
            except Exception as error:
                await send({"type": "lifespan.startup.failed", "message": str(error)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return
