"""htmx helpers: one view renders a whole page or just its partial."""

from django.shortcuts import render


def render_page_or_partial(request, page_template: str, partial_template: str, context: dict):
    """Render the partial for htmx requests, the full page otherwise."""
    template = partial_template if getattr(request, "htmx", False) else page_template
    return render(request, template, context)
