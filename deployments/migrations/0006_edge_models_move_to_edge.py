"""The edge models move to the edge app (edge/migrations/0001_initial.py).

State only: the tables, their rows, indexes and constraints stay exactly as they are; edge's
models keep these table names (`db_table`). Content types and permissions: see edge's 0001.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("deployments", "0005_merge_round2"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name="EdgeRolloutDevice"),
                migrations.DeleteModel(name="EdgeRollout"),
                migrations.DeleteModel(name="EdgeDevice"),
                migrations.DeleteModel(name="EnrollmentCode"),
            ],
            database_operations=[],
        ),
    ]
