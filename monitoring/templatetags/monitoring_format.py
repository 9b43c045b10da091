"""Formatting of metric values in templates: percentages, durations, rates; "–" for no data."""

from django import template

register = template.Library()
NO_DATA = "–"


@register.filter
def percent(value, digits: int = 1) -> str:
    """0.0123 → "1.2 %"."""
    if value is None or value == "":
        return NO_DATA
    return f"{float(value) * 100:.{int(digits)}f} %"


@register.filter
def duration(seconds) -> str:
    """Seconds as µs, ms or s, whichever reads best."""
    if seconds is None or seconds == "":
        return NO_DATA
    seconds = float(seconds)
    if seconds < 0.001:
        return f"{seconds * 1_000_000:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


@register.filter
def rate(value) -> str:
    """Requests per second with sensible precision."""
    if value is None or value == "":
        return NO_DATA
    value = float(value)
    return f"{value:.0f}" if value >= 100 else f"{value:.2f}"
