"""Builds pushed to a registry are one per version × repository × base image, shared by every
target that pushes there."""

from django.db import migrations, models

LOCAL_REPOSITORY = "modeldeck/serving"


def record_repositories(apps, schema_editor):
    """Name the repository of builds already pushed (the newest succeeded one per version,
    repository and base image; older ones stay history)."""
    Build = apps.get_model("deployments", "Build")
    seen = set()
    pushed = (
        Build.objects.filter(status="succeeded")
        .exclude(image="")
        .exclude(image__startswith=f"{LOCAL_REPOSITORY}:")
        .order_by("-created_at", "-pk")
    )
    for build in pushed.iterator():
        repository = build.image.split("@", 1)[0]
        last = repository.rsplit("/", 1)[-1]
        if ":" in last:  # a tag, not a registry port
            repository = repository[: -(len(last) - last.index(":"))]
        key = (build.version_id, repository, build.base_image)
        if key in seen or len(repository) > 255:
            continue
        seen.add(key)
        Build.objects.filter(pk=build.pk).update(repository=repository)


class Migration(migrations.Migration):
    dependencies = [
        ("deployments", "0003_edge_fleets"),
    ]

    operations = [
        migrations.AddField(
            model_name="build",
            name="repository",
            field=models.CharField(blank=True, default="", max_length=255),
        ),
        migrations.RunPython(record_repositories, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="build",
            constraint=models.UniqueConstraint(
                condition=models.Q(
                    models.Q(("repository", ""), _negated=True),
                    models.Q(("status", "failed"), _negated=True),
                ),
                fields=("version", "repository", "base_image"),
                name="deployments_build_one_per_registry",
            ),
        ),
    ]
