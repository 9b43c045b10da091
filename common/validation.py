"""Small checks for bounded input that services share: text with a length cap, numbers in a
range, string-to-string maps with bounded keys and values.

Each check raises `ApplicationError` with the message its caller chooses, so every service keeps
its own wording; by default the error's `extra` is `{field: [message]}`, the API's field form.
Map messages are `str.format` templates (see `string_map`).
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Any

from common.errors import ApplicationError


def shown(value: str, limit: int = 60) -> str:
    """A user-supplied string, shortened for an error message."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


def field_error(
    field: str, message: str, *, status: int = 400, extra: dict[str, Any] | None = None
) -> ApplicationError:
    """An ApplicationError about one input field (`extra` defaults to `{field: [message]}`)."""
    return ApplicationError(message, {field: [message]} if extra is None else extra, status=status)


def has_control_characters(value: str, *, allow_newlines: bool = False) -> bool:
    """Whether the text holds control characters (other than newlines and tabs when allowed)."""
    allowed = "\n\r\t" if allow_newlines else ""
    return any(unicodedata.category(char) == "Cc" and char not in allowed for char in value)


def is_finite_number(value: Any) -> bool:
    """An int or float (never a bool) that is neither infinite nor NaN."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def bounded_text(
    value: Any,
    *,
    field: str,
    max_length: int,
    allow_newlines: bool = False,
    not_text: str | None = None,
    too_long: str | None = None,
    control_characters: str | None = None,
) -> str:
    """Text of at most `max_length` characters without control characters (newlines and tabs
    allowed when asked); None is the empty string.

    Messages default to "FIELD has at most N characters." (also for a value that is not text)
    and "FIELD must not contain control characters.".
    """
    if value is None:
        return ""
    too_long = too_long or f"{field} has at most {max_length:,} characters."
    if not isinstance(value, str):
        raise field_error(field, not_text or too_long)
    if len(value) > max_length:
        raise field_error(field, too_long)
    if has_control_characters(value, allow_newlines=allow_newlines):
        raise field_error(
            field, control_characters or f"{field} must not contain control characters."
        )
    return value


def number_in_range(
    value: Any,
    *,
    field: str,
    low: float,
    high: float,
    extra: dict[str, Any] | None = None,
) -> float:
    """A finite number strictly between `low` and `high`, as a float; otherwise "FIELD must be
    a number." or "FIELD must be between LOW and HIGH."."""
    if not is_finite_number(value):
        raise field_error(field, f"{field} must be a number.", extra=extra)
    if not low < value < high:
        raise field_error(field, f"{field} must be between {low:g} and {high:g}.", extra=extra)
    return float(value)


def string_map(
    value: Any,
    *,
    field: str,
    max_items: int,
    max_key_length: int,
    max_value_length: int,
    key_pattern: str,
    not_a_map: str,
    too_many: str,
    bad_key: str,
    value_not_text: str,
    bad_value: str,
) -> dict[str, str]:
    """A dict of at most `max_items` text keys (1-`max_key_length` characters matching
    `key_pattern`) to text values (at most `max_value_length` characters, no control
    characters); None is an empty dict.

    The messages are `str.format` templates that may name `count` (the number of items),
    `key`, `shown` (the key shortened), `max_items`, `max_key_length` and `max_value_length`.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise field_error(field, not_a_map)
    names = {
        "count": len(value),
        "max_items": max_items,
        "max_key_length": max_key_length,
        "max_value_length": max_value_length,
    }
    if len(value) > max_items:
        raise field_error(field, too_many.format(**names))
    cleaned = {}
    for key, item in value.items():
        names.update(key=key, shown=shown(str(key)))
        if (
            not isinstance(key, str)
            or not 1 <= len(key) <= max_key_length
            or not re.fullmatch(key_pattern, key)
        ):
            raise field_error(field, bad_key.format(**names))
        if not isinstance(item, str):
            raise field_error(field, value_not_text.format(**names))
        if len(item) > max_value_length or has_control_characters(item):
            raise field_error(field, bad_value.format(**names))
        cleaned[key] = item
    return cleaned
