from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    """Metric rollups, charts, drift, experiments, guardrails and alerts."""

    name = "monitoring"

    def ready(self):
        # Deployments asks, monitoring answers: the canary gate, its review, page figures, and
        # the edge metric summaries (deployments never imports monitoring).
        from deployments import hooks, signals
        from monitoring import edge_ingest, feedback, guardrails, services
        from monitoring.services.experiments import on_release_written

        hooks.register_rollout_gate(guardrails.rollout_step_allowed)
        hooks.register_rollout_review(services.rollback_policies_evaluate_all)
        hooks.register_endpoint_page_context(feedback.endpoint_page_accuracy)
        signals.edge_summary_received.connect(
            edge_ingest.edge_summary_receive, dispatch_uid="monitoring.edge_summary"
        )
        # ... and announces each release it writes: a change of an experiment's arm ends it.
        signals.release_written.connect(
            on_release_written, dispatch_uid="monitoring.experiments.end"
        )
