"""Writes for the registry: models, versions (upload, validation, approval), aliases.

Each service checks the actor's role, runs in one transaction and appends one audit event.
One module per noun; this package re-exports the services, so callers write
`from registry import services` and `services.alias_set(...)` wherever the code lives.
"""

from registry.services.aliases import alias_delete, alias_set
from registry.services.batch_jobs import (
    batch_job_cancel,
    batch_job_create,
    batch_job_finish,
    batch_job_record_progress,
    batch_job_start,
)
from registry.services.cleaning import (
    clean_alias_name,
    clean_description,
    clean_metrics,
    clean_model_name,
    clean_params,
    clean_reference_text,
    clean_source,
    clean_tags,
    parse_json_object,
)
from registry.services.models import model_archive, model_create, model_update
from registry.services.optimizations import (
    optimization_fail,
    optimization_start,
    optimization_succeed,
    version_optimize,
)
from registry.services.versions import (
    version_approve,
    version_archive,
    version_mark_validating,
    version_record_validation,
    version_register,
    version_requeue_stale,
)

__all__ = [
    "alias_delete",
    "alias_set",
    "batch_job_cancel",
    "batch_job_create",
    "batch_job_finish",
    "batch_job_record_progress",
    "batch_job_start",
    "clean_alias_name",
    "clean_description",
    "clean_metrics",
    "clean_model_name",
    "clean_params",
    "clean_reference_text",
    "clean_source",
    "clean_tags",
    "model_archive",
    "model_create",
    "model_update",
    "optimization_fail",
    "optimization_start",
    "optimization_succeed",
    "parse_json_object",
    "version_approve",
    "version_archive",
    "version_mark_validating",
    "version_optimize",
    "version_record_validation",
    "version_register",
    "version_requeue_stale",
]
