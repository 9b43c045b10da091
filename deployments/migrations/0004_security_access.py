"""Random per-object secrets instead of ones derived from SECRET_KEY, and inference keys."""

import secrets

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

import deployments.models


def give_each_row_its_own_secret(apps, schema_editor):
    # A callable default is evaluated once for all existing rows; every row needs its own.
    Endpoint = apps.get_model("deployments", "Endpoint")
    for endpoint in Endpoint.objects.only("pk"):
        Endpoint.objects.filter(pk=endpoint.pk).update(gateway_token=secrets.token_urlsafe(32))
    EdgeDevice = apps.get_model("deployments", "EdgeDevice")
    for device in EdgeDevice.objects.only("pk"):
        EdgeDevice.objects.filter(pk=device.pk).update(manifest_key=secrets.token_hex(32))


class Migration(migrations.Migration):
    dependencies = [
        ("deployments", "0003_edge_fleets"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="endpoint",
            name="gateway_token",
            field=models.CharField(default="", editable=False, max_length=64),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="edgedevice",
            name="manifest_key",
            field=models.CharField(default="", editable=False, max_length=64),
            preserve_default=False,
        ),
        migrations.RunPython(give_each_row_its_own_secret, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="endpoint",
            name="gateway_token",
            field=models.CharField(
                default=deployments.models.new_gateway_token, editable=False, max_length=64
            ),
        ),
        migrations.AlterField(
            model_name="edgedevice",
            name="manifest_key",
            field=models.CharField(
                default=deployments.models.new_device_signing_key, editable=False, max_length=64
            ),
        ),
        migrations.AddField(
            model_name="endpoint",
            name="require_key",
            field=models.BooleanField(default=False),
        ),
        migrations.CreateModel(
            name="EndpointKey",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(blank=True, max_length=100)),
                ("prefix", models.CharField(max_length=12, unique=True)),
                ("digest", models.CharField(max_length=64)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("revoked_at", models.DateTimeField(blank=True, null=True)),
                (
                    "created_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "endpoint",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="keys",
                        to="deployments.endpoint",
                    ),
                ),
            ],
            options={"ordering": ["-created_at", "-id"]},
        ),
    ]
