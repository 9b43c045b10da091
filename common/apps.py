from django.apps import AppConfig


class CommonConfig(AppConfig):
    """Shared helpers with no concrete models."""

    name = "common"
