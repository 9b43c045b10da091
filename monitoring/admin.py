"""Admin for alert rules and alerts, drift reports, scrape states, experiments and guardrails."""

from django.contrib import admin

from accounts.actor import Actor
from common.admin import ReadOnlyAdmin, run_admin_action
from monitoring import services
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
class AlertRuleAdmin(ReadOnlyAdmin):
    list_display = ["name", "endpoint", "metric", "comparator", "threshold", "is_enabled"]
    list_filter = ["metric", "is_enabled"]
    search_fields = ["name", "endpoint__name"]
    actions = ["enable", "disable"]

    @admin.action(description="Enable the selected alert rules")
    def enable(self, request, queryset):
        actor = Actor.for_admin_site(request)
        run_admin_action(
            self,
            request,
            queryset,
            "Enabled",
            lambda rule: services.alert_rule_set_enabled(actor=actor, rule=rule, enabled=True),
        )

    @admin.action(description="Disable the selected alert rules")
    def disable(self, request, queryset):
        actor = Actor.for_admin_site(request)
        run_admin_action(
            self,
            request,
            queryset,
            "Disabled",
            lambda rule: services.alert_rule_set_enabled(actor=actor, rule=rule, enabled=False),
        )


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    list_display = ["message", "endpoint", "status", "opened_at", "resolved_at"]
    list_filter = ["status"]
    search_fields = ["message", "endpoint__name"]


@admin.register(DriftReport)
class DriftReportAdmin(ReadOnlyAdmin):
    list_display = ["endpoint", "version", "created_at", "verdict", "drifting_share", "rows"]
    list_filter = ["verdict"]
    search_fields = ["endpoint__name"]


@admin.register(ScrapeState)
class ScrapeStateAdmin(ReadOnlyAdmin):
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
