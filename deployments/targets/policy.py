"""What the operator lets team admins point targets at: base images, OCI runtimes, where serving
ports are published, and which hosts the workers and gateways may be sent to.

A target's settings come from a team admin, but the workers and gateways that act on them carry
tokens and sit inside the operator's network. So every host or URL a target names is refused
when it resolves to a link-local or cloud metadata address (always) or to a private range
(unless TARGET_ALLOW_PRIVATE_ADDRESSES), when the target is saved and again right before a
connection (a name may resolve differently by then).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from common.errors import ApplicationError

# Cloud metadata services that are not in a link-local range.
METADATA_ADDRESSES = {
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
}
# Ranges that are internal without being "private" in Python's sense.
INTERNAL_NETWORKS = [ipaddress.ip_network("100.64.0.0/10")]
# The name the Docker driver maps to the engine's host (extra_hosts: host-gateway).
DOCKER_HOST_ALIAS = "host.docker.internal"


class HostRefused(ValueError):
    """A host a target names that the operator's policy does not let anyone reach."""


def address_refusal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why this address may not be reached, or None when it may."""
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    if address.is_link_local or address in METADATA_ADDRESSES:
        return "a link-local or cloud metadata address"
    if address.is_loopback:
        return None  # the workers' own machine: the default local engine and gateways
    if address.is_unspecified or address.is_multicast or address.is_reserved:
        return "not a unicast address"
    internal = address.is_private or any(address in net for net in INTERNAL_NETWORKS)
    if internal and not settings.TARGET_ALLOW_PRIVATE_ADDRESSES:
        return "a private address (the operator allows those with TARGET_ALLOW_PRIVATE_ADDRESSES)"
    return None


def resolve(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every address `host` resolves to (an IP literal resolves to itself); [] when unknown."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    addresses = []
    for info in infos:
        try:
            addresses.append(ipaddress.ip_address(info[4][0].split("%", 1)[0]))
        except ValueError:
            continue
    return addresses


def check_host(host: str) -> None:
    """Raise HostRefused when `host` resolves to an address nobody may be sent to. A name that
    does not resolve here passes (it may exist only where the gateway runs); it is checked
    again at connection time."""
    host = host.strip("[]").rstrip(".")
    if host.lower() == DOCKER_HOST_ALIAS:
        return
    for address in resolve(host):
        reason = address_refusal(address)
        if reason is not None:
            # The message names the host the admin typed, never what it resolved to.
            raise HostRefused(f"{host} resolves to {reason}")


def check_url(url: str) -> None:
    """check_host for the host of an http(s) URL."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        host = None
    if not host:
        raise HostRefused("the URL has no host")
    check_host(host)


def _refuse(kind: str, key: str, message: str) -> ApplicationError:
    return ApplicationError(f"{kind} target setting {key}: {message}", {"config": key})


def check_docker_settings(values: Any) -> None:
    """The operator's policy for a docker target's checked settings (DockerSettings)."""
    if values.base_image not in settings.TARGET_BASE_IMAGES:
        allowed = ", ".join(settings.TARGET_BASE_IMAGES) or "none"
        raise _refuse(
            "Docker",
            "base_image",
            f"this installation builds only on its allowed base images ({allowed}; "
            "TARGET_BASE_IMAGES).",
        )
    if values.runtime is not None and values.runtime not in settings.TARGET_RUNTIMES:
        allowed = ", ".join(settings.TARGET_RUNTIMES) or "only the engine's default"
        raise _refuse(
            "Docker",
            "runtime",
            f"this installation allows these OCI runtimes: {allowed} (TARGET_RUNTIMES).",
        )
    publish = ipaddress.ip_address(values.publish_host)
    if not publish.is_loopback and values.publish_host not in settings.TARGET_PUBLISH_HOSTS:
        raise _refuse(
            "Docker",
            "publish_host",
            "serving ports are published on loopback only, unless the operator allows this "
            "address (TARGET_PUBLISH_HOSTS).",
        )
    checks = [("access_host", values.access_host)]
    if values.prediction_log_url:
        checks.append(("prediction_log_url", urlsplit(values.prediction_log_url).hostname or ""))
    if values.registry:
        checks.append(("registry", registry_host(values.registry["repository"])))
    for key, host in checks:
        if not host:
            continue
        try:
            check_host(host)
        except HostRefused as error:
            raise _refuse("Docker", key, f"{error}.") from None


def check_kubernetes_settings(values: Any) -> None:
    """The operator's policy for a kubernetes target's checked settings."""
    if values.prediction_log_url:
        try:
            check_url(values.prediction_log_url)
        except HostRefused as error:
            raise _refuse("Kubernetes", "prediction_log_url", f"{error}.") from None


def registry_host(repository: str) -> str:
    """The registry host of an image repository ("" for Docker Hub's implied one)."""
    first, _, rest = repository.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first.rsplit(":", 1)[0] if first.count(":") == 1 else first
    return ""
