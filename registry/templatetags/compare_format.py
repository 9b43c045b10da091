"""`{{ value|compare_value }}`: a compared value as people read it — lists joined, mappings as
`key: value`, floats to four significant digits, nothing as "—" — never a Python repr."""

import math

from django import template

register = template.Library()
NOTHING = "—"


def _number(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if value == 0 or 1e-4 <= abs(value) < 1e6:
        return f"{value:.4g}" if abs(value) < 1 else f"{value:,.4g}".replace(",", " ")
    return f"{value:.3e}"


@register.filter
def compare_value(value) -> str:
    """One compared value as text."""
    if value is None or value == "":
        return NOTHING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, int):
        return f"{value:,}".replace(",", " ") if abs(value) >= 10_000 else str(value)
    if isinstance(value, list | tuple):
        return ", ".join(compare_value(item) for item in value) if value else "none"
    if isinstance(value, dict):
        return "; ".join(f"{key}: {compare_value(item)}" for key, item in value.items()) or "none"
    return str(value)


@register.filter
def compare_delta(value) -> str:
    """A difference with its sign (+0.012, −3)."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return ""
    text = compare_value(abs(value))
    return f"+{text}" if value > 0 else (f"−{text}" if value < 0 else "0")
