"""Small helpers for raw ASGI apps: headers, request ids, bounded body reading, responses."""

from __future__ import annotations

import random
import re
import zlib
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


# Codings a request body may carry (tritonclient's request_compression_algorithm sends these).
_DECODERS = {
    b"gzip": zlib.MAX_WBITS | 16,
    b"x-gzip": zlib.MAX_WBITS | 16,
    b"deflate": zlib.MAX_WBITS,
}
# Fast over small: a response is compressed on the serving path, per request.
_COMPRESS_LEVEL = 1


def decode_body(headers: Headers, body: bytes, limit: int) -> bytes:
    """The body with its Content-Encoding undone; the decoded size is bounded by limit (413).

    gzip and deflate (zlib-wrapped, or raw deflate as some clients send) are accepted; any
    other coding is 415. A body that inflates past the limit is refused as soon as it does, so
    a decompression bomb costs at most limit bytes.
    """
    coding = header(headers, b"content-encoding")
    if coding is None:
        return body
    coding = coding.strip().lower()
    if coding in (b"", b"identity"):
        return body
    wbits = _DECODERS.get(coding)
    if wbits is None:
        raise RequestError(
            f"Content-Encoding {coding.decode(errors='replace')!r} is not supported; "
            "use gzip or deflate",
            415,
        )
    try:
        return _inflate(body, wbits, limit)
    except zlib.error:
        if coding != b"deflate":
            raise RequestError(f"request body is not valid {coding.decode()} data") from None
    try:
        return _inflate(body, -zlib.MAX_WBITS, limit)
    except zlib.error:
        raise RequestError("request body is not valid deflate data") from None


def _inflate(body: bytes, wbits: int, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits)
    decoded = inflater.decompress(body, limit + 1)
    if len(decoded) > limit or inflater.unconsumed_tail:
        raise RequestError(f"request body inflates to more than the limit of {limit} bytes", 413)
    decoded += inflater.flush()
    if len(decoded) > limit:
        raise RequestError(f"request body inflates to more than the limit of {limit} bytes", 413)
    if not inflater.eof:
        raise zlib.error("truncated compressed data")
    return decoded


def accepted_coding(headers: Headers) -> bytes | None:
    """gzip or deflate when the caller's Accept-Encoding allows it (gzip first), else None."""
    value = header(headers, b"accept-encoding")
    if not value:
        return None
    allowed = set()
    refused = set()
    for item in value.lower().split(b","):
        coding, _, parameters = item.strip().partition(b";")
        quality = parameters.strip()
        try:
            wanted = not quality.startswith(b"q=") or float(quality[2:]) > 0
        except ValueError:
            wanted = False
        (allowed if wanted else refused).add(coding.strip())
    for coding in (b"gzip", b"deflate"):
        if coding in allowed or (b"*" in allowed and coding not in refused):
            return coding
    return None


def compress_response(request_headers: Headers, body: bytes, response_headers: Headers) -> bytes:
    """Compress body when the caller asked for it, adding Content-Encoding and Vary."""
    coding = accepted_coding(request_headers)
    response_headers.append((b"vary", b"accept-encoding"))
    if coding is None or not body:
        return body
    response_headers.append((b"content-encoding", coding))
    return encode_body(coding, body)


def encode_body(coding: bytes, body: bytes) -> bytes:
    """Compress a response body with gzip or deflate (zlib-wrapped, as RFC 9110 says)."""
    wbits = zlib.MAX_WBITS | 16 if coding == b"gzip" else zlib.MAX_WBITS
    compressor = zlib.compressobj(_COMPRESS_LEVEL, zlib.DEFLATED, wbits)
    return compressor.compress(body) + compressor.flush()


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
