"""The outbox: an event exists exactly when the change it reports committed, and only then are
its deliveries sent."""

import pytest
from django.db import transaction

from events import services
from events.models import Event, Webhook, WebhookDelivery

pytestmark = pytest.mark.django_db(transaction=True)


class Boom(Exception):
    pass


def test_a_rolled_back_change_records_no_event_and_sends_nothing(team, monkeypatch):
    Webhook.objects.create(
        team=team, name="ci", url="https://hooks.example.com/a", events=["release.live"]
    )
    sent = []
    monkeypatch.setattr(services, "_enqueue_deliveries", sent.append)
    with pytest.raises(Boom), transaction.atomic():
        services.event_record(team=team, kind="release.live", payload={"release": 2})
        raise Boom
    assert not Event.objects.exists() and not WebhookDelivery.objects.exists()
    assert sent == []

    with transaction.atomic():
        event = services.event_record(team=team, kind="release.live", payload={"release": 3})
        assert sent == []  # nothing leaves before the commit
    delivery = WebhookDelivery.objects.get()
    assert (delivery.source, delivery.payload) == (event, {"release": 3})
    assert sent == [[delivery.pk]]
