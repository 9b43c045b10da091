from django.apps import AppConfig


class DeploymentsConfig(AppConfig):
    """Targets, builds, endpoints, releases and the reconciler."""

    name = "deployments"
