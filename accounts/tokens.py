"""The format of API and device tokens: `<kind>_<prefix>_<secret>`, stored as a SHA-256 digest.

The secret has 256 bits of entropy, so a plain SHA-256 is enough (no slow hash needed), and the
prefix lets lookups use an index instead of comparing every row.
"""

import hashlib
import hmac
import re
import secrets

_PATTERN = re.compile(
    r"^(?P<kind>[a-z]{3})_(?P<prefix>[A-Za-z0-9]{12})_(?P<secret>[A-Za-z0-9_-]{43})$"
)


def generate(kind: str = "mdk") -> tuple[str, str, str]:
    """Make a new token; returns (plain token, prefix, digest). Show the plain token once."""
    prefix = secrets.token_hex(6)
    plain = f"{kind}_{prefix}_{secrets.token_urlsafe(32)}"
    return plain, prefix, digest(plain)


def digest(plain: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(plain.encode()).hexdigest()


def parse(plain: str) -> tuple[str, str] | None:
    """Split a token into (prefix, secret), or None when it is not one of ours."""
    match = _PATTERN.match(plain)
    if match is None:
        return None
    return match["prefix"], match["secret"]


def matches(plain: str, stored_digest: str) -> bool:
    """Constant-time comparison of a presented token with a stored digest."""
    return hmac.compare_digest(digest(plain), stored_digest)
