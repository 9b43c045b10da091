"""Template tags that let other apps' pages show an endpoint's running experiment without
their views importing monitoring."""

from django import template

from monitoring.models import Experiment, ExperimentStatus

register = template.Library()


@register.simple_tag
def running_experiment(endpoint):
    """The experiment running on `endpoint` (already access-checked by the page), or None."""
    if endpoint is None or endpoint.pk is None:
        return None
    return (
        Experiment.objects.filter(endpoint_id=endpoint.pk, status=ExperimentStatus.RUNNING)
        .select_related("control__model", "treatment__model")
        .first()
    )
