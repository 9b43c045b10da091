# Webhooks moved to the events app: copy every webhook and delivery over with its id (a webhook's
# signing secret is derived from its id), then drop monitoring's tables. Reversible.

from django.core.management.color import no_style
from django.db import migrations

WEBHOOK_COLUMNS = (
    "id, created_at, updated_at, name, url, events, is_active, secret_salt, allowed_host, "
    "allowed_by_id, created_by_id, team_id"
)
DELIVERY_COLUMNS = (
    "id, delivery_id, created_at, event, payload, status, attempts, next_attempt_at, "
    "last_attempt_at, response_status, last_error, delivered_at, webhook_id"
)


def _copy(schema_editor, apps, source: str, destination: str, models: list[str]) -> None:
    connection = schema_editor.connection
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # Check foreign keys now: PostgreSQL will not drop a table with pending checks.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        for table, columns in (("webhook", WEBHOOK_COLUMNS), ("webhookdelivery", DELIVERY_COLUMNS)):
            cursor.execute(
                f"INSERT INTO {quote(f'{destination}_{table}')} ({columns}) "
                f"SELECT {columns} FROM {quote(f'{source}_{table}')}"
            )
        # The source rows now live in the destination (deliveries first: they refer to webhooks).
        for table in ("webhookdelivery", "webhook"):
            cursor.execute(f"DELETE FROM {quote(f'{source}_{table}')}")
        # Ids were copied, so the destination's id sequences must move past them (PostgreSQL).
        model_classes = [apps.get_model(label) for label in models]
        for statement in connection.ops.sequence_reset_sql(no_style(), model_classes):
            cursor.execute(statement)


def forwards(apps, schema_editor):
    _copy(schema_editor, apps, "monitoring", "events", ["events.Webhook", "events.WebhookDelivery"])


def backwards(apps, schema_editor):
    _copy(
        schema_editor,
        apps,
        "events",
        "monitoring",
        ["monitoring.Webhook", "monitoring.WebhookDelivery"],
    )


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0002_experiments_feedback_guardrails"),
        ("events", "0001_arch_outbox_webhooks"),
    ]

    operations = [
        migrations.RunPython(forwards, backwards),
        migrations.DeleteModel(name="WebhookDelivery"),
        migrations.DeleteModel(name="Webhook"),
    ]
