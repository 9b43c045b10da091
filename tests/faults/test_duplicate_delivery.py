"""Duplicate delivery of every Celery task is harmless: the second run changes nothing.

The task list comes from the Celery app, so a task added without a case here fails
`test_every_task_has_a_duplicate_delivery_case`.
"""

import json

import pytest
from django.apps import apps

from config.celery import app as celery_app
from deployments import services as deployment_services
from deployments.models import Endpoint
from events import services as events_services
from events.models import EventKind
from registry.models import VersionStatus
from tests.faults.processes import serving_port_block

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.fault]

# Periodic jobs take no arguments: run them as beat would, twice.
PERIODIC = {
    "deployments.tasks.reconcile_all",
    "deployments.edge.tasks.advance_edge_rollouts",
    "events.tasks.prune_events",
    "events.tasks.retry_webhook_deliveries",
    "monitoring.tasks.compute_drift_all",
    "monitoring.tasks.evaluate_alerts",
    "monitoring.tasks.evaluate_experiments",
    "monitoring.tasks.evaluate_rollback_policies",
    "monitoring.tasks.prune_prediction_log",
    "monitoring.tasks.rollup_metrics",
    "monitoring.tasks.scrape_all",
    "registry.tasks.requeue_stale_batch_jobs",
    "registry.tasks.requeue_stale_validations",
}


def registered_tasks() -> set[str]:
    celery_app.loader.import_default_modules()
    return {name for name in celery_app.tasks if not name.startswith("celery.")}


def state() -> dict:
    """Every row of our apps; timestamps out (a second run may touch `updated_at`)."""
    found = {}
    for label in ("accounts", "events", "registry", "deployments", "edge", "monitoring"):
        for model in apps.get_app_config(label).get_models():
            rows = [
                {k: v for k, v in row.items() if not k.endswith("_at") and k != "log"}
                for row in model.objects.order_by("pk").values()
            ]
            found[model._meta.label_lower] = json.dumps(rows, default=str, sort_keys=True)
    return found


def run_twice(name: str, *args) -> tuple[dict, dict]:
    task = celery_app.tasks[name]
    task.apply(args=args).get(propagate=True)
    first = state()
    task.apply(args=args).get(propagate=True)
    return first, state()


def _changed(first, second):
    return sorted(k for k in first if first[k] != second[k])


# --- cases for the tasks that take an id -------------------------------------------------------


def case_validate_version(world):
    version = _pending_version(world)
    first, second = run_twice("registry.tasks.validate_version", version.pk)
    version.refresh_from_db()
    assert version.status == VersionStatus.READY, version.status_reason
    return first, second


def versions_model(world):
    return world["versions"][1].model


def _pending_version(world):
    from tests.deployments.conftest import make_version

    return make_version(versions_model(world), number=7, status=VersionStatus.PENDING)


def case_reconcile_endpoint(world):
    endpoint = deployment_services.endpoint_create(
        actor=world["system"], name="twice", target=world["target"], version=world["versions"][1]
    )
    first, second = run_twice("deployments.tasks.reconcile_endpoint", endpoint.pk)
    endpoint.refresh_from_db()
    assert endpoint.status == "live", endpoint.status_reason
    return first, second


def case_gateway_restart(world):
    """A rotated gateway token restarts the gateway once; the second delivery finds it running
    with the current token and changes nothing."""
    from deployments.access import endpoint_gateway_token_rotate

    endpoint = deployment_services.endpoint_create(
        actor=world["system"], name="rotated", target=world["target"], version=world["versions"][1]
    )
    celery_app.tasks["deployments.tasks.reconcile_endpoint"].apply(args=(endpoint.pk,))
    endpoint_gateway_token_rotate(actor=world["system"], endpoint=endpoint)
    first, second = run_twice("deployments.tasks.gateway_restart", endpoint.pk)
    endpoint.refresh_from_db()
    assert endpoint.status == "live", endpoint.status_reason
    return first, second


def case_deliver_webhook(world):
    webhook = events_services.webhook_create(
        actor=world["system"],
        team=world["target"].team,
        name="hook",
        url="https://127.0.0.1:9/hook",
        events=[EventKind.ALERT_OPENED],
    )
    delivery = events_services.webhook_ping(actor=world["system"], webhook=webhook)
    return run_twice("events.tasks.deliver_webhook", delivery.pk)


def _scientist_actor(world):
    from accounts.models import Role
    from tests.conftest import actor_for
    from tests.factories import MembershipFactory, UserFactory

    team = world["target"].team
    user = UserFactory(username="twice")
    MembershipFactory(user=user, team=team, role=Role.SCIENTIST)
    return actor_for(user, team)


def case_run_batch_job(world):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from registry import services as registry_services
    from registry.models import JobStatus

    rows = "x\n" + "".join(f"{number}\n" for number in range(20))
    job = registry_services.batch_job_create(
        actor=_scientist_actor(world),
        version_reference="adder:1",
        file=SimpleUploadedFile("input.csv", rows.encode(), content_type="text/csv"),
    )
    first, second = run_twice("registry.tasks.run_batch_job", job.pk)
    job.refresh_from_db()
    assert (job.status, job.rows_done) == (JobStatus.SUCCEEDED, 20), job.status_reason
    return first, second


def case_optimize_version(world):
    from registry import services as registry_services

    optimization = registry_services.version_optimize(
        actor=_scientist_actor(world), version=world["versions"][1], method="int8"
    )
    first, second = run_twice("registry.tasks.optimize_version", optimization.pk)
    optimization.refresh_from_db()
    assert optimization.is_terminal
    return first, second


WITH_ID = {
    "registry.tasks.validate_version": case_validate_version,
    "registry.tasks.run_batch_job": case_run_batch_job,
    "registry.tasks.optimize_version": case_optimize_version,
    "deployments.tasks.reconcile_endpoint": case_reconcile_endpoint,
    "events.tasks.deliver_webhook": case_deliver_webhook,
    "deployments.tasks.gateway_restart": case_gateway_restart,
}


def test_every_task_has_a_duplicate_delivery_case():
    assert sorted(registered_tasks() - PERIODIC - set(WITH_ID)) == []


@pytest.fixture
def fault_world(versions, dev_target, system, runtime_processes, settings):
    # Ports of our own: another test run on this machine may take a port of the shared default
    # range between our free-port check and our server's bind, and the second run would restart.
    settings.LOCAL_TARGET_PORT_RANGE = serving_port_block()
    return {"versions": versions, "target": dev_target, "system": system}


@pytest.mark.parametrize("name", sorted(WITH_ID))
def test_a_second_delivery_of_a_task_changes_nothing(name, fault_world):
    first, second = WITH_ID[name](fault_world)
    assert _changed(first, second) == []


@pytest.mark.parametrize("name", sorted(PERIODIC))
def test_a_second_run_of_a_periodic_job_changes_nothing(name, fault_world):
    if name not in registered_tasks():
        pytest.fail(f"{name} is listed here but no longer registered")
    deployment_services.endpoint_create(
        actor=fault_world["system"],
        name="periodic",
        target=fault_world["target"],
        version=fault_world["versions"][1],
    )
    celery_app.tasks["deployments.tasks.reconcile_endpoint"].apply(
        args=(Endpoint.objects.get(name="periodic").pk,)
    )
    first, second = run_twice(name)
    changed = _changed(first, second)
    if name == "monitoring.tasks.scrape_all":
        # Each scrape is a new observation of live counters; the minute rows must not double.
        changed.remove("monitoring.scrapestate") if "monitoring.scrapestate" in changed else None
    assert changed == []
