from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    """Metric rollups, charts, drift, experiments, guardrails and alerts."""

    name = "monitoring"

    def ready(self) -> None:
        # deployments cannot import monitoring; it announces each release it writes instead.
        from deployments.signals import release_written
        from monitoring.experiments import on_release_written

        release_written.connect(on_release_written, dispatch_uid="monitoring.experiments.end")
