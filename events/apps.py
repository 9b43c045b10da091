from django.apps import AppConfig


class EventsConfig(AppConfig):
    """The outbox of domain events and its sinks (webhooks), below every domain app."""

    name = "events"
