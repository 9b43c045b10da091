"""Webhook deliveries: signed, retried with backoff, and never sent to internal addresses unless
an installation admin allowed the host; redirects are not followed."""

import hashlib
import hmac
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from accounts.actor import Actor
from events import services, webhooks
from events.models import Event, Webhook, WebhookDelivery
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


class Receiver:
    """A real HTTP server on 127.0.0.1 that records requests and answers from a script."""

    def __init__(self, answers=(200,), location: str = "") -> None:
        self.requests: list[dict] = []
        self.answers = list(answers)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append({"headers": dict(self.headers), "body": body})
                status = (
                    receiver.answers.pop(0) if len(receiver.answers) > 1 else receiver.answers[0]
                )
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *arguments) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def staff():
    return UserFactory(username="root-ops", is_staff=True)


def make_webhook(team, url, events=("release.live",)):
    return Webhook.objects.create(team=team, name="ci", url=url, events=list(events))


def emit_and_send(team, *, now=None):
    event = services.event_record(
        team=team, kind="release.live", payload={"endpoint": "fraud", "release": 3}
    )
    deliveries = list(event.deliveries.all())
    assert len(deliveries) == 1 and deliveries[0].source == event
    return services.delivery_attempt(delivery_id=deliveries[0].pk, now=now)


def test_an_allowed_host_receives_a_signed_payload(team, receiver, staff):
    webhook = make_webhook(team, receiver.url())
    services.webhook_allow_host(
        actor=Actor(user=staff, label="root-ops"), webhook=webhook, allow=True
    )
    delivery = emit_and_send(team)
    assert delivery.status == "succeeded" and delivery.attempts == 1
    assert len(receiver.requests) == 1
    sent = receiver.requests[0]
    timestamp = sent["headers"]["X-Modeldeck-Timestamp"]
    expected = hmac.new(
        webhook.secret.encode(), timestamp.encode() + b"." + sent["body"], hashlib.sha256
    ).hexdigest()
    assert sent["headers"]["X-Modeldeck-Signature"] == f"sha256={expected}"
    assert sent["headers"]["X-Modeldeck-Event"] == "release.live"
    assert sent["headers"]["Host"] == f"127.0.0.1:{receiver.port}"
    document = json.loads(sent["body"])
    assert document["event"] == "release.live" and document["team"] == "alpha"
    assert document["data"] == {"endpoint": "fraud", "release": 3}
    assert document["id"] == sent["headers"]["X-Modeldeck-Delivery"] == str(delivery.delivery_id)


def test_the_same_host_without_the_admin_override_gets_nothing(team, receiver):
    make_webhook(team, receiver.url())
    delivery = emit_and_send(team)
    assert delivery.status == "failed"
    assert "non-public address" in delivery.last_error
    assert receiver.requests == []


def test_failures_are_retried_with_exponential_backoff(team, staff, settings):
    settings.WEBHOOK_RETRY_BASE_SECONDS = 30
    flaky = Receiver(answers=(500, 503, 200))
    try:
        webhook = make_webhook(team, flaky.url())
        services.webhook_allow_host(
            actor=Actor(user=staff, label="ops"), webhook=webhook, allow=True
        )
        now = timezone.now()
        delivery = emit_and_send(team, now=now)
        assert (delivery.status, delivery.attempts, delivery.response_status) == ("pending", 1, 500)
        assert delivery.next_attempt_at == now + timedelta(seconds=30)
        # Not due yet: nothing is sent.
        assert services.deliveries_retry_due(now=now + timedelta(seconds=29)) == 0
        assert services.deliveries_retry_due(now=now + timedelta(seconds=30)) == 1
        delivery.refresh_from_db()
        assert (delivery.attempts, delivery.response_status) == (2, 503)
        assert delivery.next_attempt_at == now + timedelta(seconds=30) + timedelta(seconds=60)
        services.deliveries_retry_due(now=now + timedelta(seconds=90))
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts) == ("succeeded", 3)
        assert len(flaky.requests) == 3
        # Every attempt carries the same delivery id and body.
        assert len({request["body"] for request in flaky.requests}) == 1
    finally:
        flaky.close()


def test_deliveries_give_up_after_the_last_attempt(team, staff, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 2
    down = Receiver(answers=(500,))
    try:
        webhook = make_webhook(team, down.url())
        services.webhook_allow_host(
            actor=Actor(user=staff, label="ops"), webhook=webhook, allow=True
        )
        now = timezone.now()
        emit_and_send(team, now=now)
        services.deliveries_retry_due(now=now + timedelta(hours=1))
        delivery = WebhookDelivery.objects.get()
        assert (delivery.status, delivery.attempts) == ("failed", 2)
        assert services.deliveries_retry_due(now=now + timedelta(days=1)) == 0
    finally:
        down.close()


def test_a_redirect_from_an_allowed_host_to_an_internal_one_is_not_followed(team, staff):
    internal = Receiver()
    redirecting = Receiver(answers=(302,), location=internal.url("localhost"))
    try:
        webhook = make_webhook(team, redirecting.url())
        services.webhook_allow_host(
            actor=Actor(user=staff, label="ops"), webhook=webhook, allow=True
        )
        delivery = emit_and_send(team)
        assert delivery.response_status == 302 and delivery.status == "pending"
        assert "redirects are not followed" in delivery.last_error
        assert len(redirecting.requests) == 1
        assert internal.requests == []
    finally:
        internal.close()
        redirecting.close()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://[::1]:8080/hook",
        "http://10.1.2.3/hook",
        "http://172.16.0.9/hook",
        "http://172.31.255.1/hook",
        "http://192.168.1.20/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:9/hook",
        "http://0.0.0.0/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://100.64.0.1/hook",
        "http://224.0.0.1/hook",
        "http://[fe80::1]/hook",
        "http://[fc00::1]/hook",
    ],
)
def test_internal_destinations_are_refused(url):
    with pytest.raises(webhooks.UnsafeDestination):
        webhooks.resolve(url)


@pytest.mark.parametrize("url", ["ftp://example.com/x", "http://user:pw@example.com/", "http:///x"])
def test_odd_urls_are_refused(url):
    with pytest.raises(webhooks.UnsafeDestination):
        webhooks.split_url(url)


def test_public_addresses_pass_and_the_connection_pins_the_checked_address(monkeypatch):
    answers = [(2, 1, 6, "", ("93.184.216.34", 443))]
    monkeypatch.setattr(webhooks.socket, "getaddrinfo", lambda *args, **kwargs: answers)
    destination = webhooks.resolve("https://hooks.example.com/in?x=1")
    assert destination.connect_url == "https://93.184.216.34:443/in?x=1"
    assert destination.host_header == "hooks.example.com"
    # A name with one internal answer among public ones is refused (DNS rebinding).
    answers.append((2, 1, 6, "", ("10.0.0.5", 443)))
    with pytest.raises(webhooks.UnsafeDestination):
        webhooks.resolve("https://hooks.example.com/in")


def test_only_installation_admins_allow_hosts(team, make_actor, admin_member):
    webhook = make_webhook(team, "http://intranet.example/hook")
    with pytest.raises(PermissionDenied):
        services.webhook_allow_host(actor=make_actor(admin_member), webhook=webhook, allow=True)
    webhook.refresh_from_db()
    assert webhook.allowed_host == ""


def test_webhooks_get_only_the_events_they_subscribed_to(team):
    make_webhook(team, "https://hooks.example.com/a", events=["alert.opened"])
    quiet = services.event_record(team=team, kind="release.live", payload={})
    assert not quiet.deliveries.exists()
    heard = services.event_record(team=team, kind="alert.opened", payload={"rule": "errors"})
    assert [d.event for d in heard.deliveries.all()] == ["alert.opened"]
    assert Event.objects.filter(team=team).count() == 2
    with pytest.raises(ValueError):
        services.event_record(team=team, kind="made.up", payload={})
    assert Event.objects.filter(team=team).count() == 2
