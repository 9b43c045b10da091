"""`{% sparkline values label unit %}`: a small inline SVG line of one value a minute (gaps where
a minute had no value), with an accessible name that states the latest and highest values."""

from django import template
from django.utils.html import format_html, format_html_join

register = template.Library()
WIDTH, HEIGHT, PAD = 120, 28, 2


def _segments(values: list) -> list[list[tuple[float, float]]]:
    present = [value for value in values if value is not None]
    if not present:
        return []
    top = max(present) or 1.0
    step = (WIDTH - 2 * PAD) / max(1, len(values) - 1)
    segments, current = [], []
    for index, value in enumerate(values):
        if value is None:
            if current:
                segments.append(current)
            current = []
            continue
        y = HEIGHT - PAD - (value / top) * (HEIGHT - 2 * PAD)
        current.append((round(PAD + index * step, 1), round(y, 1)))
    if current:
        segments.append(current)
    return segments


def _number(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


@register.simple_tag
def sparkline(values, label: str, unit: str = ""):
    """The SVG, or a dash when there is nothing to draw."""
    values = list(values or [])
    present = [value for value in values if value is not None]
    if not present or not any(present):
        return format_html('<span class="sparkline-empty" title="{}: none">–</span>', label)
    suffix = f" {unit}" if unit else ""
    name = (
        f"{label}, one value a minute over the last hour: latest "
        f"{_number(present[-1])}{suffix}, highest {_number(max(present))}{suffix}"
    )
    lines = format_html_join(
        "",
        '<polyline points="{}" />',
        ((" ".join(f"{x},{y}" for x, y in segment),) for segment in _segments(values)),
    )
    return format_html(
        '<svg class="sparkline" viewBox="0 0 {} {}" width="{}" height="{}" role="img" '
        'aria-label="{}"><title>{}</title>{}</svg>',
        WIDTH, HEIGHT, WIDTH, HEIGHT, name, name, lines,
    )  # fmt: skip
