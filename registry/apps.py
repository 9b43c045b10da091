from django.apps import AppConfig


class RegistryConfig(AppConfig):
    """Registered models, versions, artifacts and aliases."""

    name = "registry"
