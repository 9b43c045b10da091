"""Sending one signed webhook request safely: no internal addresses, no DNS rebinding, no redirects.

The host name is resolved here, every address it resolves to is checked, and the connection goes
to the checked address itself with the Host header and TLS SNI (and certificate check) set to the
name — so a second, different DNS answer can never redirect the request inward. Loopback,
private, link-local, multicast, reserved and other non-global addresses are refused unless an
installation admin allowed that exact host for that webhook. Redirects are never followed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

SIGNATURE_HEADER = "X-Modeldeck-Signature"
TIMESTAMP_HEADER = "X-Modeldeck-Timestamp"
EVENT_HEADER = "X-Modeldeck-Event"
DELIVERY_HEADER = "X-Modeldeck-Delivery"
USER_AGENT = "Modeldeck-Webhook/1"


class UnsafeDestination(Exception):
    """The URL may not be contacted (its scheme, or an address it resolves to)."""


@dataclass(frozen=True)
class Destination:
    """A checked URL: where to connect and what to call the host."""

    scheme: str
    host: str
    port: int
    address: str
    target: str  # path and query

    @property
    def connect_url(self) -> str:
        """The URL with the checked address in place of the name."""
        literal = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.scheme}://{literal}:{self.port}{self.target}"

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == default else f"{name}:{self.port}"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256(secret, "<timestamp>." + body)."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def is_public_address(address: str) -> bool:
    """Whether an IP address is a globally routable unicast address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        # ::ffff:10.0.0.1 and 64:ff9b::/96 (NAT64) reach IPv4 hosts; judge the IPv4 one.
        embedded = ip.ipv4_mapped or (
            ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
            if ip in ipaddress.ip_network("64:ff9b::/96")
            else None
        )
        if embedded is not None:
            return is_public_address(str(embedded))
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def split_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path+query) of an http(s) URL; UnsafeDestination otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise UnsafeDestination(f"not a valid URL: {error}") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeDestination("only http and https URLs are allowed")
    if parts.username is not None or parts.password is not None:
        raise UnsafeDestination("URLs with credentials are not allowed")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise UnsafeDestination("the URL has no host")
    port = port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, host, port, target


def resolve(url: str, *, allowed_host: str = "") -> Destination:
    """Check a URL and pick the address to connect to.

    Every address the name resolves to must be public, unless `allowed_host` is exactly the
    URL's host (an admin's override for an on-premise receiver).
    """
    scheme, host, port, target = split_url(url)
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as error:
        raise UnsafeDestination(f"cannot resolve {host}: {error}") from None
    addresses = list(dict.fromkeys(answer[4][0] for answer in answers))
    if not addresses:
        raise UnsafeDestination(f"{host} resolves to no address")
    if host != allowed_host.strip().lower():
        refused = [address for address in addresses if not is_public_address(address)]
        if refused:
            raise UnsafeDestination(
                f"{host} resolves to a non-public address ({', '.join(refused)}); an "
                "installation admin must allow this host first"
            )
    return Destination(scheme, host, port, addresses[0], target)


@dataclass(frozen=True)
class Outcome:
    """What one delivery attempt got."""

    delivered: bool
    status: int | None = None
    error: str = ""
    # Permanent refusals are not retried (the destination is not allowed).
    permanent: bool = False


def post(
    *, url: str, allowed_host: str, body: bytes, headers: dict[str, str], timeout: float
) -> Outcome:
    """POST `body` to the checked destination; 2xx is success, anything else a failure."""
    try:
        destination = resolve(url, allowed_host=allowed_host)
    except UnsafeDestination as error:
        return Outcome(False, error=str(error), permanent=True)
    request_headers = {
        **headers,
        "Host": destination.host_header,
        "User-Agent": USER_AGENT,
        "Content-Type": "application/json",
    }
    extensions = {"sni_hostname": destination.host} if destination.scheme == "https" else {}
    try:
        # trust_env=False: an HTTP(S)_PROXY would connect by name and undo the address check.
        with httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 3.0)),
            follow_redirects=False,
            trust_env=False,
        ) as client:
            request = client.build_request(
                "POST",
                destination.connect_url,
                content=body,
                headers=request_headers,
                extensions=extensions,
            )
            response = client.send(request, stream=True)
            response.close()
    except httpx.HTTPError as error:
        return Outcome(False, error=f"{error.__class__.__name__}: {error}"[:1000])
    if 200 <= response.status_code < 300:
        return Outcome(True, response.status_code)
    if 300 <= response.status_code < 400:
        return Outcome(
            False,
            response.status_code,
            "redirects are not followed; point the webhook at the final URL",
        )
    return Outcome(False, response.status_code, f"answered {response.status_code}")
