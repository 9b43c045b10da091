"""Inference keys at the gateway: who may call the model.

The dashboard sends the gateway an "access" part of the route-table document:
`{"require_key": bool, "keys": ["<sha256 hex of a key>", ...]}`. Only digests travel and are
kept (keys have 256 bits of entropy, so a plain SHA-256 is enough). A caller presents its key as
`Authorization: Bearer <key>` or `X-Api-Key: <key>`; several keys are valid at once, which is
what lets a key be rotated without losing a request.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from modeldeck_runtime.asgi import Headers, header
from modeldeck_runtime.codec import RequestError

MAX_KEYS = 1000
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class AccessError(ValueError):
    """An access document that cannot be used; the message is shown to the admin client."""


@dataclass(frozen=True)
class Access:
    """Whether a key is required, and the digests of the keys that are valid now."""

    require_key: bool = False
    digests: frozenset[str] = frozenset()

    def document(self) -> dict[str, Any]:
        """The JSON form, as the route-table document carries it."""
        return {"require_key": self.require_key, "keys": sorted(self.digests)}


OPEN = Access()


def key_digest(key: str) -> str:
    """The form in which a key is stored and sent to gateways."""
    return hashlib.sha256(key.encode()).hexdigest()


def parse_access(document: Any) -> Access:
    """The access part of a route-table document (absent: no key required)."""
    if not isinstance(document, dict) or "access" not in document:
        return OPEN
    access = document["access"]
    if not isinstance(access, dict):
        raise AccessError("'access' must be an object")
    require_key = access.get("require_key", False)
    if not isinstance(require_key, bool):
        raise AccessError("'access.require_key' must be true or false")
    digests = access.get("keys", [])
    if not isinstance(digests, list) or len(digests) > MAX_KEYS:
        raise AccessError(f"'access.keys' must be a list of at most {MAX_KEYS} digests")
    for digest in digests:
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            raise AccessError("'access.keys' holds SHA-256 digests (64 lowercase hex digits)")
    return Access(require_key=require_key, digests=frozenset(digests))


def presented_key(headers: Headers) -> str | None:
    """The key a request carries, from `X-Api-Key` or `Authorization: Bearer`."""
    value = header(headers, b"x-api-key")
    if value is None:
        authorization = header(headers, b"authorization")
        if authorization is None:
            return None
        scheme, _, value = authorization.partition(b" ")
        if scheme.lower() != b"bearer":
            return None
    key = value.decode("ascii", errors="replace").strip()
    return key or None


def require_key(access: Access, headers: Headers) -> None:
    """Raise a 401 unless the endpoint is open or the request carries a valid key."""
    if not access.require_key:
        return
    key = presented_key(headers)
    # Looking the digest up in a set leaks nothing useful: digests of random keys are
    # unpredictable, so timing says nothing about how close a guess was.
    if key is None or key_digest(key) not in access.digests:
        raise RequestError(
            "this endpoint requires an API key (Authorization: Bearer <key> or X-Api-Key)", 401
        )


def with_access(document: dict[str, Any], access: Access) -> dict[str, Any]:
    """A route-table document with its access part (left out while the endpoint is open and
    keyless, so tables of endpoints without keys read as before)."""
    if access == OPEN:
        return document
    return {**document, "access": access.document()}


def load_access(*paths: Path | None) -> Access:
    """The access part of the first of these files that exists (the saved state, then the
    routes file), else open; a broken file is refused like a broken route table."""
    for path in paths:
        if path is not None and path.exists():
            try:
                return parse_access(orjson.loads(path.read_bytes()))
            except (orjson.JSONDecodeError, AccessError) as error:
                raise ValueError(f"{path}: {error}") from None
    return OPEN
