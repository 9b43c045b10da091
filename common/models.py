"""Abstract base models shared by the apps."""

from django.db import models


class TimeStampedModel(models.Model):
    """Adds created and updated timestamps."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True
