"""Admin for alert rules and alerts, drift reports, scrape states, experiments and guardrails."""

from django.contrib import admin

from common.admin import ReadOnlyAdmin
from monitoring.models import (
    Alert,
    AlertRule,
    DriftReport,
    Experiment,
    PolicyEvaluation,
    RollbackPolicy,
    ScrapeState,
)


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    list_display = ["name", "endpoint", "metric", "comparator", "threshold", "is_enabled"]
    list_filter = ["metric", "is_enabled"]
    search_fields = ["name", "endpoint__name"]
    readonly_fields = ["breaching_since", "clear_since", "last_value", "last_evaluated_at"]


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ["message", "endpoint", "status", "opened_at", "resolved_at"]
    list_filter = ["status"]
    search_fields = ["message", "endpoint__name"]
    readonly_fields = [field.name for field in Alert._meta.fields]


@admin.register(DriftReport)
class DriftReportAdmin(admin.ModelAdmin):
    list_display = ["endpoint", "version", "created_at", "verdict", "drifting_share", "rows"]
    list_filter = ["verdict"]
    search_fields = ["endpoint__name"]
    readonly_fields = [field.name for field in DriftReport._meta.fields]


@admin.register(ScrapeState)
class ScrapeStateAdmin(admin.ModelAdmin):
    list_display = ["endpoint", "component", "url", "scraped_at", "failures", "duration_seconds"]
    list_filter = ["component"]
    search_fields = ["endpoint__name", "url"]
    exclude = ["values"]
    readonly_fields = [
        "endpoint",
        "target",
        "component",
        "version",
        "url",
        "process_start",
        "fetched_at",
        "scraped_at",
        "duration_seconds",
        "failures",
        "last_error",
    ]


@admin.register(Experiment)
class ExperimentAdmin(ReadOnlyAdmin):
    list_display = ["name", "endpoint", "status", "verdict", "metric", "started_at"]
    list_filter = ["status", "verdict", "metric"]
    search_fields = ["name", "endpoint__name"]


@admin.register(RollbackPolicy)
class RollbackPolicyAdmin(ReadOnlyAdmin):
    list_display = ["endpoint", "scope", "on_inconclusive", "dry_run", "is_enabled"]
    list_filter = ["scope", "dry_run", "is_enabled"]
    search_fields = ["endpoint__name"]


@admin.register(PolicyEvaluation)
class PolicyEvaluationAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "endpoint", "release_number", "outcome", "action", "message"]
    list_filter = ["outcome", "action"]
    search_fields = ["endpoint__name", "message"]
