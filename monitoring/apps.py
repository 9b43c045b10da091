from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    """Metric rollups, charts, drift, experiments, guardrails and alerts."""

    name = "monitoring"
