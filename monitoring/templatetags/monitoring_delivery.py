"""`{% prediction_log_delivery endpoint as delivery %}` for the endpoint page's partial."""

from django import template

from monitoring.selectors import prediction_log_delivery as select_delivery

register = template.Library()


@register.simple_tag
def prediction_log_delivery(endpoint):
    """Whether the endpoint's prediction log reaches the dashboard (None: nothing to judge)."""
    return select_delivery(endpoint=endpoint)
