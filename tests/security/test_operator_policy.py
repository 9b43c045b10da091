"""Operator policy on what team admins may point targets at: base images, OCI runtimes, where
ports are published, and hosts that resolve to link-local, metadata or private addresses —
refused when the target is saved and again when a connection is made."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deployments.models import Target
from deployments.targets.base import DriverError, Route
from deployments.targets.gateway import gateway_put_routes, gateway_read_routes, http_ready
from tests.conftest import token_client

pytestmark = pytest.mark.django_db
FIXTURES = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


def _ipv4_in(network: str):
    net = ipaddress.ip_network(network)
    return st.integers(0, net.num_addresses - 1).map(lambda n: net.network_address + n)


def spellings(address: ipaddress.IPv4Address):
    """Ways to write one IPv4 address that resolvers accept."""
    value = int(address)
    octets = [int(part) for part in str(address).split(".")]
    return st.sampled_from(
        [
            str(address),
            ".".join(f"0x{octet:x}" for octet in octets),
            hex(value),
            str(value),
            f"::ffff:{address}",
        ]
    )


metadata_hosts = st.one_of(
    _ipv4_in("169.254.0.0/16").flatmap(spellings),
    st.integers(1, 2**64 - 1).map(lambda n: str(ipaddress.ip_address(0xFE80 << 112 | n))),
    st.sampled_from(["fd00:ec2::254", "100.100.100.200", "169.254.169.254"]),
)
private_hosts = st.one_of(
    _ipv4_in("10.0.0.0/8").flatmap(spellings),
    _ipv4_in("172.16.0.0/12").flatmap(spellings),
    _ipv4_in("192.168.0.0/16").flatmap(spellings),
    _ipv4_in("100.64.0.0/10").map(str),
    st.integers(1, 2**100).map(lambda n: str(ipaddress.ip_address(0xFD << 120 | n))),
)


def docker_config(key: str, host: str) -> dict:
    bracketed = f"[{host}]" if ":" in host else host
    if key == "access_host":
        return {"access_host": host}
    if key == "prediction_log_url":
        return {"prediction_log_url": f"http://{bracketed}:8000"}
    return {"registry": {"repository": f"{bracketed}:5000/team/serving"}}


def create(api, kind: str, config: dict):
    return api.post(
        "/api/v1/targets/", {"name": "policy-target", "kind": kind, "config": config}, "json"
    )


@pytest.fixture
def api(team, admin_member):
    return token_client(admin_member, team)


def assert_refused(response, key: str, host: str | None = None) -> None:
    assert response.status_code == 400, response.content
    assert response.json()["detail"] == {"config": key}
    assert not Target.objects.filter(name="policy-target").exists()


@settings(max_examples=60, suppress_health_check=FIXTURES, deadline=None)
@given(
    host=metadata_hosts,
    key=st.sampled_from(["access_host", "prediction_log_url", "registry"]),
    allow_private=st.booleans(),
)
def test_metadata_and_link_local_hosts_are_refused_even_when_private_ones_are_allowed(
    api, settings, host, key, allow_private
):
    settings.TARGET_ALLOW_PRIVATE_ADDRESSES = allow_private
    response = create(api, "docker", docker_config(key, host))
    assert_refused(response, key)
    # Some spellings (a leading "::", a registry as a bare number) fail the format check first.
    error = response.json()["error"]
    assert "link-local or cloud metadata" in error or " must " in error, error


@settings(max_examples=40, suppress_health_check=FIXTURES, deadline=None)
@given(host=private_hosts, key=st.sampled_from(["access_host", "prediction_log_url", "registry"]))
def test_private_hosts_need_the_operators_permission(api, settings, host, key):
    settings.TARGET_ALLOW_PRIVATE_ADDRESSES = False
    refused = create(api, "docker", docker_config(key, host))
    assert_refused(refused, key)
    if "a private address" not in refused.json()["error"]:
        assert " must " in refused.json()["error"]  # a spelling the format refuses first
        return
    settings.TARGET_ALLOW_PRIVATE_ADDRESSES = True
    response = create(api, "docker", docker_config(key, host))
    assert response.status_code == 201, response.content
    Target.objects.filter(name="policy-target").delete()


@settings(max_examples=30, suppress_health_check=FIXTURES, deadline=None)
@given(host=metadata_hosts)
def test_kubernetes_prediction_log_urls_follow_the_same_rule(api, settings, host, tmp_path):
    bracketed = f"[{host}]" if ":" in host else host
    config = {"kubeconfig_env": "MODELDECK_TARGET_ALPHA_KUBECONFIG"}
    response = create(
        api, "kubernetes", {**config, "prediction_log_url": f"http://{bracketed}:8000"}
    )
    assert_refused(response, "prediction_log_url")


image_names = st.from_regex(
    r"[a-z][a-z0-9]{0,10}/[a-z][a-z0-9]{0,10}:[a-z0-9]{1,8}", fullmatch=True
)


@settings(max_examples=30, suppress_health_check=FIXTURES, deadline=None)
@given(image=image_names, runtime=st.from_regex(r"[a-z][a-z0-9]{0,10}", fullmatch=True))
def test_base_images_and_runtimes_come_from_the_operators_lists(api, settings, image, runtime):
    settings.TARGET_BASE_IMAGES = ["modeldeck/base:bookworm"]
    settings.TARGET_RUNTIMES = []
    if image != "modeldeck/base:bookworm":
        assert_refused(create(api, "docker", {"base_image": image}), "base_image")
    assert_refused(create(api, "docker", {"runtime": runtime}), "runtime")
    settings.TARGET_BASE_IMAGES = ["modeldeck/base:bookworm", image]
    settings.TARGET_RUNTIMES = [runtime]
    response = create(api, "docker", {"base_image": image, "runtime": runtime})
    assert response.status_code == 201, response.content
    Target.objects.filter(name="policy-target").delete()


@settings(max_examples=30, suppress_health_check=FIXTURES, deadline=None)
@given(
    address=st.one_of(
        st.ip_addresses(v=4).filter(lambda a: not a.is_loopback),
        st.sampled_from([ipaddress.ip_address("0.0.0.0"), ipaddress.ip_address("::")]),  # noqa: S104
    )
)
def test_ports_are_published_on_loopback_unless_the_operator_allows_more(api, settings, address):
    settings.TARGET_PUBLISH_HOSTS = []
    assert_refused(create(api, "docker", {"publish_host": str(address)}), "publish_host")
    for loopback in ("127.0.0.1", "127.3.2.1", "::1"):
        response = create(api, "docker", {"publish_host": loopback})
        assert response.status_code == 201, response.content
        Target.objects.filter(name="policy-target").delete()
    settings.TARGET_PUBLISH_HOSTS = [str(address)]
    settings.TARGET_ALLOW_PRIVATE_ADDRESSES = True
    response = create(api, "docker", {"publish_host": str(address), "access_host": "127.0.0.1"})
    assert response.status_code == 201, response.content
    Target.objects.filter(name="policy-target").delete()


@pytest.fixture
def rebound(monkeypatch):
    """A name that resolved to loopback when the target was saved and to the metadata service
    now. DNS is the one thing faked: the connection attempt is real and must not happen."""
    real = socket.getaddrinfo
    attempts = []

    def getaddrinfo(host, *args, **kwargs):
        if host == "gateway.rebind.test":
            attempts.append(host)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", 0))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return attempts


def test_hosts_are_checked_again_at_connection_time(rebound):
    url = "http://gateway.rebind.test:8000"
    assert gateway_read_routes(admin_url=url, token="t") is None
    assert http_ready(f"{url}/v2/health/ready") is False
    route = Route("m:1", 1, "http://127.0.0.1:9", 100, "primary")
    with pytest.raises(DriverError, match="link-local or cloud metadata"):
        gateway_put_routes(admin_url=url, token="t", routes=[route], generation=1)
    # Each call resolved the name itself (and stopped there: no connection to 169.254.169.254
    # is possible from here, so reaching it would have shown as an httpx error instead).
    assert len(rebound) == 3
