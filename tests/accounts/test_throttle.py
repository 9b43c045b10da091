"""Sign-in throttling: lockout after repeated failures, keyed on the trusted client address."""

import ipaddress

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.test import Client
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from accounts.actor import client_ip
from accounts.models import AuditEvent
from accounts.services import token_create
from edge.api.views import EnrollThrottle
from tests.conftest import actor_for
from tests.factories import MembershipFactory, UserFactory

PASSWORD = "correct horse battery staple"
property_settings = hypothesis_settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
addresses = st.one_of(
    st.ip_addresses(v=4, network="198.18.0.0/15"), st.ip_addresses(v=6, network="2001:db8::/32")
).map(str)
# What an attacker puts in X-Forwarded-For: addresses, lists of them, or junk.
spoofed_headers = st.one_of(
    st.lists(addresses, min_size=1, max_size=4).map(", ".join),
    st.text(alphabet="0123456789.:, abcdef", max_size=60),
)


@pytest.fixture
def member(team):
    user = UserFactory(username="lockme")
    user.set_password(PASSWORD)
    user.save()
    MembershipFactory(user=user, team=team)
    return user


def _fresh_start() -> int:
    """Forget every lockout; returns the last audit id so an example counts only its own rows."""
    AccessAttempt.objects.all().delete()
    last = AuditEvent.objects.order_by("-id").first()
    return last.pk if last else 0


def _sign_in(client: Client, address: str, password: str, forwarded: str | None = None):
    extra = {"REMOTE_ADDR": address}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    return client.post("/accounts/login/", {"username": "lockme", "password": password}, **extra)


def _signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


@property_settings
@given(wrong=st.integers(min_value=10, max_value=40), address=addresses, spoof=spoofed_headers)
@example(wrong=40, address="198.18.0.7", spoof="10.0.0.1")
def test_wrong_passwords_lock_the_address_out_and_the_right_one_is_refused(
    member, wrong, address, spoof
):
    assert settings.AXES_FAILURE_LIMIT == 10
    since = _fresh_start()
    client = Client()
    for attempt in range(wrong):
        # A spoofed X-Forwarded-For on every try: it must neither reset nor split the count.
        response = _sign_in(client, address, f"wrong-{attempt}", forwarded=f"{spoof}{attempt}")
        assert response.status_code == (200 if attempt < 9 else 429)
    response = _sign_in(client, address, PASSWORD, forwarded=spoof)
    assert response.status_code == 429
    assert b"Too many failed sign-ins from your address" in response.content
    assert not _signed_in(client)
    # Every counted failure is audited (the tenth as the lockout); refused tries are not.
    events = list(
        AuditEvent.objects.filter(pk__gt=since).order_by("id").values_list("action", "source_ip")
    )
    assert events == [("auth.sign_in_failed", address)] * 9 + [("auth.lockout", address)]
    assert AuditEvent.objects.filter(pk__gt=since, data__username="lockme").count() == 10
    # Another address is not locked out.
    other = Client()
    assert _sign_in(other, "198.51.100.9", PASSWORD).status_code == 302
    assert _signed_in(other)


@property_settings
@given(address=addresses, spoofs=st.lists(spoofed_headers, min_size=1, max_size=5))
def test_spoofed_forwarded_for_from_an_untrusted_client_does_not_change_the_key(
    member, rf, address, spoofs
):
    assert settings.TRUSTED_PROXY_COUNT == 0
    _fresh_start()
    for spoof in spoofs:
        request = rf.post("/accounts/login/", REMOTE_ADDR=address, HTTP_X_FORWARDED_FOR=spoof)
        assert client_ip(request) == address
        assert EnrollThrottle().get_ident(request) == address
        _sign_in(Client(), address, "wrong", forwarded=spoof)
    assert list(AccessAttempt.objects.values_list("ip_address", flat=True).distinct()) == [address]


@property_settings
@given(
    proxy=addresses,
    clients=st.lists(addresses, min_size=2, max_size=2, unique=True),
    spoof=spoofed_headers,
)
def test_with_one_trusted_proxy_the_address_the_proxy_appends_is_the_key(
    member, settings, rf, proxy, clients, spoof
):
    settings.TRUSTED_PROXY_COUNT = 1
    _fresh_start()
    attacker, bystander = clients
    # The attacker's own X-Forwarded-For arrives first; the proxy appends the real address.
    forwarded = f"{spoof}, {attacker}" if spoof.strip(" ,") else attacker
    request = rf.post("/accounts/login/", REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR=forwarded)
    assert client_ip(request) == attacker
    assert EnrollThrottle().get_ident(request) == attacker
    for attempt in range(settings.AXES_FAILURE_LIMIT):
        _sign_in(Client(), proxy, f"wrong-{attempt}", forwarded=forwarded)
    assert _sign_in(Client(), proxy, PASSWORD, forwarded=forwarded).status_code == 429
    assert list(AccessAttempt.objects.values_list("ip_address", flat=True)) == [attacker]
    # The bystander behind the same proxy signs in.
    bystander_client = Client()
    assert _sign_in(bystander_client, proxy, PASSWORD, forwarded=bystander).status_code == 302
    assert _signed_in(bystander_client)


def test_a_request_without_forwarded_for_behind_a_trusted_proxy_counts_as_the_proxy(settings, rf):
    settings.TRUSTED_PROXY_COUNT = 2
    request = rf.get("/", REMOTE_ADDR="192.0.2.1", HTTP_X_FORWARDED_FOR="198.51.100.4")
    # Fewer hops than configured: nobody vouches for the entry, so the proxy's own address.
    assert client_ip(request) == "192.0.2.1"
    request = rf.get("/", REMOTE_ADDR="192.0.2.1", HTTP_X_FORWARDED_FOR="203.0.113.5, 10.0.0.2")
    assert client_ip(request) == "203.0.113.5"
    assert ipaddress.ip_address(client_ip(request)).version == 4


def test_wrong_api_tokens_count_and_lock_the_address_out_of_the_api(member, team):
    _fresh_start()
    _row, good = token_create(actor=actor_for(member), user=member, team=team, name="ci")
    client = APIClient(REMOTE_ADDR="198.18.5.5")
    assert client.get("/api/v1/models/", HTTP_AUTHORIZATION=f"Bearer {good}").status_code == 200
    prefix = good.split("_")[1]
    wrong = f"mdk_{prefix}_{'x' * 43}"
    statuses = [
        client.get("/api/v1/models/", HTTP_AUTHORIZATION=f"Bearer {wrong}").status_code
        for _ in range(settings.AXES_FAILURE_LIMIT)
    ]
    assert statuses == [401] * (settings.AXES_FAILURE_LIMIT - 1) + [429]
    locked = client.get("/api/v1/models/", HTTP_AUTHORIZATION=f"Bearer {good}")
    assert locked.status_code == 429
    assert locked.json()["error"].startswith("Too many failed sign-ins from your address")
    assert AuditEvent.objects.filter(
        action="auth.lockout", source_ip="198.18.5.5", data__username=f"token {prefix}"
    ).exists()
    # The same token from another address still works.
    other = APIClient(REMOTE_ADDR="198.18.5.6")
    assert other.get("/api/v1/models/", HTTP_AUTHORIZATION=f"Bearer {good}").status_code == 200


@pytest.mark.django_db
def test_edge_enrollment_throttle_ignores_a_spoofed_forwarded_for():
    client = APIClient()
    statuses = [
        client.post(
            "/api/v1/edge/enroll/",
            {"code": "not-a-code", "name": "dev"},
            format="json",
            REMOTE_ADDR="198.18.9.9",
            HTTP_X_FORWARDED_FOR=f"10.1.{n // 250}.{n % 250}",
        ).status_code
        for n in range(31)
    ]
    # 30 a minute per address (EnrollThrottle), whatever the client says it forwards.
    assert statuses[-1] == 429
    assert 429 not in statuses[:30]
