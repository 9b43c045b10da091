"""Input rules shared by the API, the pages, the admin and the demo command."""

from __future__ import annotations

import json
import math
import re
import unicodedata
from typing import Any
from urllib.parse import unquote

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator

from common.errors import ApplicationError
from registry.models import ALIAS_NAME_PATTERN, MODEL_NAME_PATTERN, is_reserved_alias_name

MAX_DESCRIPTION_LENGTH = 10_000
MAX_TAGS = 50
MAX_TAG_KEY_LENGTH = 64
MAX_TAG_VALUE_LENGTH = 256
TAG_KEY_PATTERN = r"[a-z0-9_.:-]+"
MAX_ENTRIES = 200  # metrics and params
MAX_ENTRY_KEY_LENGTH = 128
MAX_PARAM_TEXT_LENGTH = 1_000
MAX_REASON_LENGTH = 500
MAX_COMMENT_LENGTH = 2_000


def _shown(value: str, limit: int = 60) -> str:
    """A user-supplied string, shortened for an error message."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


def _field_error(field: str, message: str, *, status: int = 400) -> ApplicationError:
    return ApplicationError(message, {field: [message]}, status=status)


def _has_control_characters(value: str, *, allow_newlines: bool = False) -> bool:
    allowed = "\n\r\t" if allow_newlines else ""
    return any(unicodedata.category(char) == "Cc" and char not in allowed for char in value)


# ---------------------------------------------------------------------------------------------
# Input rules shared by the API, the pages, the admin and the demo command.


def clean_model_name(name: Any) -> str:
    """A model name exactly as stored, or an ApplicationError saying what to change."""
    if not isinstance(name, str) or not name:
        raise _field_error("name", "A model needs a name.")
    if len(name) > 63:
        raise _field_error(
            "name", f"A model name has at most 63 characters; this one has {len(name):,}."
        )
    for char in name:
        if not char.isascii():
            code = f"U+{ord(char):04X} {unicodedata.name(char, 'UNKNOWN CHARACTER')}"
            lookalike = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
            hint = f" (it looks like {lookalike.lower()!r})" if lookalike else ""
            raise _field_error(
                "name",
                f"Model names use plain ASCII only: {_shown(name)} contains {char!r} "
                f"({code}){hint}.",
            )
    if "%" in name:
        raise _field_error("name", f"Model names cannot contain '%': send {_shown(name)} decoded.")
    if name != name.lower():
        raise _field_error("name", f"Model names are lowercase: use {name.lower()!r}.")
    if not re.fullmatch(MODEL_NAME_PATTERN, name):
        raise _field_error(
            "name",
            "Use 1-63 characters: lowercase letters, digits, '.', '_' or '-', starting with a "
            "letter or digit.",
        )
    return name


def clean_description(description: Any) -> str:
    """Free text of at most 10 000 characters; newlines allowed, other control characters not."""
    if description is None:
        return ""
    if not isinstance(description, str):
        raise _field_error("description", "The description must be text.")
    if len(description) > MAX_DESCRIPTION_LENGTH:
        raise _field_error(
            "description", f"A description has at most {MAX_DESCRIPTION_LENGTH:,} characters."
        )
    if _has_control_characters(description, allow_newlines=True):
        raise _field_error("description", "The description contains control characters.")
    return description


def clean_tags(tags: Any) -> dict[str, str]:
    """Tags: at most 50 `key: value` string pairs with short, simple keys."""
    if tags is None:
        return {}
    if not isinstance(tags, dict):
        raise _field_error("tags", "Tags must be an object of string keys and string values.")
    if len(tags) > MAX_TAGS:
        raise _field_error("tags", f"A model has at most {MAX_TAGS} tags; got {len(tags):,}.")
    cleaned = {}
    for key, value in tags.items():
        if (
            not isinstance(key, str)
            or not 1 <= len(key) <= MAX_TAG_KEY_LENGTH
            or not re.fullmatch(TAG_KEY_PATTERN, key)
        ):
            raise _field_error(
                "tags",
                f"Tag key {_shown(str(key))}: use 1-{MAX_TAG_KEY_LENGTH} characters among "
                "lowercase letters, digits, '_', '.', ':' and '-'.",
            )
        if not isinstance(value, str):
            raise _field_error("tags", f"Tag {key!r}: the value must be a string.")
        if len(value) > MAX_TAG_VALUE_LENGTH or _has_control_characters(value):
            raise _field_error(
                "tags",
                f"Tag {key!r}: the value has at most "
                f"{MAX_TAG_VALUE_LENGTH} characters and no control "
                "characters.",
            )
        cleaned[key] = value
    return cleaned


def parse_json_object(text: Any, *, field: str) -> dict:
    """A JSON object given as text (multipart fields) or already decoded."""
    if text is None or text == "":
        return {}
    if isinstance(text, str):
        try:
            text = json.loads(text)
        except ValueError as error:
            raise _field_error(field, f"{field} is not valid JSON: {error}.") from None
    if not isinstance(text, dict):
        raise _field_error(field, f"{field} must be a JSON object.")
    return text


def clean_metrics(metrics: Any) -> dict[str, float]:
    """Offline metrics: names to finite numbers."""
    metrics = parse_json_object(metrics, field="metrics")
    _check_entries(metrics, "metrics")
    for key, value in metrics.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise _field_error("metrics", f"Metric {_shown(key)} must be a finite number.")
    return metrics


def clean_params(params: Any) -> dict[str, Any]:
    """Training parameters: names to strings, numbers, booleans or null."""
    params = parse_json_object(params, field="params")
    _check_entries(params, "params")
    for key, value in params.items():
        if value is not None and not isinstance(value, str | int | float | bool):
            raise _field_error(
                "params", f"Parameter {_shown(key)} must be a string, number, boolean or null."
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise _field_error("params", f"Parameter {_shown(key)} must be finite.")
        if isinstance(value, str) and _has_control_characters(value, allow_newlines=True):
            raise _field_error("params", f"Parameter {_shown(key)} contains control characters.")
        if isinstance(value, str) and len(value) > MAX_PARAM_TEXT_LENGTH:
            raise _field_error(
                "params",
                f"Parameter {_shown(key)} is longer than {MAX_PARAM_TEXT_LENGTH} characters.",
            )
    return params


def _check_entries(entries: dict, field: str) -> None:
    if len(entries) > MAX_ENTRIES:
        raise _field_error(field, f"At most {MAX_ENTRIES} {field}; got {len(entries):,}.")
    for key in entries:
        if not key or len(key) > MAX_ENTRY_KEY_LENGTH or _has_control_characters(key):
            raise _field_error(
                field,
                f"{field} names have 1-{MAX_ENTRY_KEY_LENGTH} characters "
                "and no control characters.",
            )


def clean_source(source: Any) -> str:
    """Where the model came from: an http(s) URL, or nothing."""
    if not source:
        return ""
    if not isinstance(source, str) or len(source) > 2_000:
        raise _field_error("source", "The source is an http(s) URL of at most 2 000 characters.")
    try:
        URLValidator(schemes=["http", "https"])(source)
    except ValidationError:
        raise _field_error(
            "source", f"The source must be an http(s) URL; got {_shown(source)}."
        ) from None
    return source


def clean_reference_text(value: Any, *, field: str, max_length: int) -> str:
    """Free-text lineage (git commit, data reference): bounded, printable, no path tricks."""
    if not value:
        return ""
    if not isinstance(value, str) or len(value) > max_length:
        raise _field_error(field, f"{field} has at most {max_length:,} characters.")
    if _has_control_characters(value) or "\x00" in value:
        raise _field_error(field, f"{field} must not contain control characters.")
    # Look through percent-encoding (also double) and Unicode look-alikes (fullwidth dots).
    decoded = value
    for _ in range(3):
        decoded = unquote(decoded)
    normalized = unicodedata.normalize("NFKC", decoded)
    if re.search(r"(^|[\\/])\.\.([\\/]|$)", normalized):
        raise _field_error(field, f"{field} must not step out of a folder with '..'.")
    return value


def clean_alias_name(name: Any) -> str:
    """A storable alias name: short, simple, and not one the registry answers itself."""
    if (
        not isinstance(name, str)
        or not name
        or len(name) > 32
        or not re.fullmatch(ALIAS_NAME_PATTERN, name)
    ):
        raise _field_error(
            "alias",
            "Alias names have 1-32 characters: lowercase letters, digits, '_' or '-', starting "
            "with a letter.",
        )
    if is_reserved_alias_name(name):
        raise _field_error(
            "alias",
            f"'{name}' is reserved: 'latest' and 'v<number>' always mean the newest ready "
            "version and version <number>.",
        )
    return name


def _clean_text(value: Any, *, field: str, max_length: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > max_length:
        raise _field_error(field, f"{field} has at most {max_length:,} characters.")
    if _has_control_characters(value, allow_newlines=True):
        raise _field_error(field, f"{field} must not contain control characters.")
    return value.strip()
