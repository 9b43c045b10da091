"""Pagination for HTML lists."""

from django.core.paginator import Page, Paginator


def paginate(request, items, *, per_page: int = 25) -> Page:
    """The requested page of `items`; out-of-range or junk page numbers give the nearest page."""
    return Paginator(items, per_page).get_page(request.GET.get("page"))
