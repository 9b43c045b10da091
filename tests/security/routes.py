"""Helpers to enumerate every route of the project, for tests that must cover all of them."""

import re

from django.urls import URLPattern, URLResolver, get_resolver

_CONVERTER_VALUES = {
    "int": "1",
    "str": "x",
    "slug": "x",
    "path": "x/y",
    "uuid": "00000000-0000-0000-0000-000000000001",
}


def _concrete(route: str) -> str:
    # Regex patterns (admin, DRF format suffixes) first, so their `(?P<name>...)` groups are not
    # mistaken for path converters: fill groups with a value, drop anchors.
    route = re.sub(r"\(\?P<\w+>[^)]*\)", "1", route)
    route = re.sub(
        r"<(?:(\w+):)?\w+>", lambda m: _CONVERTER_VALUES.get(m.group(1) or "str", "x"), route
    )
    return route.replace("^", "").replace("$", "").replace("\\", "")


def _walk(patterns, prefix=""):
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern):
            yield "/" + _concrete(route)


def all_routes() -> list[str]:
    """Every route with sample values in place of its parameters (format-suffix variants out)."""
    routes = sorted(set(_walk(get_resolver().url_patterns)))
    return [r for r in routes if "(" not in r and "?" not in r and "." not in r.rsplit("/", 1)[-1]]


def page_routes() -> list[str]:
    """HTML routes (not the API, not the admin, not static)."""
    return [r for r in all_routes() if not r.startswith(("/api/", "/admin/", "/static/"))]


def api_routes() -> list[str]:
    """Routes of the JSON API."""
    return [r for r in all_routes() if r.startswith("/api/v1/")]
