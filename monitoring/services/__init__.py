"""Writes for monitoring: rollup upkeep, drift reports, alert rules and alerts, experiments,
rollback policies (guardrails), the prediction log and feedback.

One module per noun; this package re-exports the services, so callers write
`from monitoring import services` and `services.experiment_create(...)` wherever the code lives.
"""

from monitoring.services.alerts import (
    alert_rule_create,
    alert_rule_delete,
    alert_rule_evaluate,
    alert_rule_set_enabled,
    alerts_evaluate_all,
    rule_value,
)
from monitoring.services.drift_reports import (
    drift_compute_all,
    drift_report_create,
    live_histograms,
    serving_versions,
)
from monitoring.services.experiments import (
    experiment_create,
    experiment_evaluate,
    experiment_start,
    experiment_stop,
    experiments_end_for_release,
    experiments_evaluate_all,
    on_release_written,
)
from monitoring.services.feedback import (
    feedback_record,
    prediction_log_configure,
    prediction_records_ingest,
    prediction_records_prune,
)
from monitoring.services.rollback_policies import (
    rollback_policies_evaluate_all,
    rollback_policy_delete,
    rollback_policy_evaluate,
    rollback_policy_set,
)
from monitoring.services.rollups import metrics_prune, metrics_rollup_hours

__all__ = [
    "alert_rule_create",
    "alert_rule_delete",
    "alert_rule_evaluate",
    "alert_rule_set_enabled",
    "alerts_evaluate_all",
    "drift_compute_all",
    "drift_report_create",
    "experiment_create",
    "experiment_evaluate",
    "experiment_start",
    "experiment_stop",
    "experiments_end_for_release",
    "experiments_evaluate_all",
    "feedback_record",
    "live_histograms",
    "metrics_prune",
    "metrics_rollup_hours",
    "on_release_written",
    "prediction_log_configure",
    "prediction_records_ingest",
    "prediction_records_prune",
    "rollback_policies_evaluate_all",
    "rollback_policy_delete",
    "rollback_policy_evaluate",
    "rollback_policy_set",
    "rule_value",
    "serving_versions",
]
