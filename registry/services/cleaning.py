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

from common.validation import (
    bounded_text,
    field_error,
    has_control_characters,
    is_finite_number,
    shown,
    string_map,
)
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


def clean_model_name(name: Any) -> str:
    """A model name exactly as stored, or an ApplicationError saying what to change."""
    if not isinstance(name, str) or not name:
        raise field_error("name", "A model needs a name.")
    if len(name) > 63:
        raise field_error(
            "name", f"A model name has at most 63 characters; this one has {len(name):,}."
        )
    for char in name:
        if not char.isascii():
            code = f"U+{ord(char):04X} {unicodedata.name(char, 'UNKNOWN CHARACTER')}"
            lookalike = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
            hint = f" (it looks like {lookalike.lower()!r})" if lookalike else ""
            raise field_error(
                "name",
                f"Model names use plain ASCII only: {shown(name)} contains {char!r} "
                f"({code}){hint}.",
            )
    if "%" in name:
        raise field_error("name", f"Model names cannot contain '%': send {shown(name)} decoded.")
    if name != name.lower():
        raise field_error("name", f"Model names are lowercase: use {name.lower()!r}.")
    if not re.fullmatch(MODEL_NAME_PATTERN, name):
        raise field_error(
            "name",
            "Use 1-63 characters: lowercase letters, digits, '.', '_' or '-', starting with a "
            "letter or digit.",
        )
    return name


def clean_description(description: Any) -> str:
    """Free text of at most 10 000 characters; newlines allowed, other control characters not."""
    return bounded_text(
        description,
        field="description",
        max_length=MAX_DESCRIPTION_LENGTH,
        allow_newlines=True,
        not_text="The description must be text.",
        too_long=f"A description has at most {MAX_DESCRIPTION_LENGTH:,} characters.",
        control_characters="The description contains control characters.",
    )


def clean_tags(tags: Any) -> dict[str, str]:
    """Tags: at most 50 `key: value` string pairs with short, simple keys."""
    return string_map(
        tags,
        field="tags",
        max_items=MAX_TAGS,
        max_key_length=MAX_TAG_KEY_LENGTH,
        max_value_length=MAX_TAG_VALUE_LENGTH,
        key_pattern=TAG_KEY_PATTERN,
        not_a_map="Tags must be an object of string keys and string values.",
        too_many="A model has at most {max_items} tags; got {count:,}.",
        bad_key="Tag key {shown}: use 1-{max_key_length} characters among "
        "lowercase letters, digits, '_', '.', ':' and '-'.",
        value_not_text="Tag {key!r}: the value must be a string.",
        bad_value="Tag {key!r}: the value has at most {max_value_length} characters and no "
        "control characters.",
    )


def parse_json_object(text: Any, *, field: str) -> dict:
    """A JSON object given as text (multipart fields) or already decoded."""
    if text is None or text == "":
        return {}
    if isinstance(text, str):
        try:
            text = json.loads(text)
        except ValueError as error:
            raise field_error(field, f"{field} is not valid JSON: {error}.") from None
    if not isinstance(text, dict):
        raise field_error(field, f"{field} must be a JSON object.")
    return text


def clean_metrics(metrics: Any) -> dict[str, float]:
    """Offline metrics: names to finite numbers."""
    metrics = parse_json_object(metrics, field="metrics")
    _check_entries(metrics, "metrics")
    for key, value in metrics.items():
        if not is_finite_number(value):
            raise field_error("metrics", f"Metric {shown(key)} must be a finite number.")
    return metrics


def clean_params(params: Any) -> dict[str, Any]:
    """Training parameters: names to strings, numbers, booleans or null."""
    params = parse_json_object(params, field="params")
    _check_entries(params, "params")
    for key, value in params.items():
        if value is not None and not isinstance(value, str | int | float | bool):
            raise field_error(
                "params", f"Parameter {shown(key)} must be a string, number, boolean or null."
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise field_error("params", f"Parameter {shown(key)} must be finite.")
        if isinstance(value, str) and has_control_characters(value, allow_newlines=True):
            raise field_error("params", f"Parameter {shown(key)} contains control characters.")
        if isinstance(value, str) and len(value) > MAX_PARAM_TEXT_LENGTH:
            raise field_error(
                "params",
                f"Parameter {shown(key)} is longer than {MAX_PARAM_TEXT_LENGTH} characters.",
            )
    return params


def _check_entries(entries: dict, field: str) -> None:
    if len(entries) > MAX_ENTRIES:
        raise field_error(field, f"At most {MAX_ENTRIES} {field}; got {len(entries):,}.")
    for key in entries:
        if not key or len(key) > MAX_ENTRY_KEY_LENGTH or has_control_characters(key):
            raise field_error(
                field,
                f"{field} names have 1-{MAX_ENTRY_KEY_LENGTH} characters "
                "and no control characters.",
            )


def clean_source(source: Any) -> str:
    """Where the model came from: an http(s) URL, or nothing."""
    if not source:
        return ""
    if not isinstance(source, str) or len(source) > 2_000:
        raise field_error("source", "The source is an http(s) URL of at most 2 000 characters.")
    try:
        URLValidator(schemes=["http", "https"])(source)
    except ValidationError:
        raise field_error(
            "source", f"The source must be an http(s) URL; got {shown(source)}."
        ) from None
    return source


def clean_reference_text(value: Any, *, field: str, max_length: int) -> str:
    """Free-text lineage (git commit, data reference): bounded, printable, no path tricks."""
    if not value:
        return ""
    bounded_text(value, field=field, max_length=max_length)
    # Look through percent-encoding (also double) and Unicode look-alikes (fullwidth dots).
    decoded = value
    for _ in range(3):
        decoded = unquote(decoded)
    normalized = unicodedata.normalize("NFKC", decoded)
    if re.search(r"(^|[\\/])\.\.([\\/]|$)", normalized):
        raise field_error(field, f"{field} must not step out of a folder with '..'.")
    return value


def clean_alias_name(name: Any) -> str:
    """A storable alias name: short, simple, and not one the registry answers itself."""
    if (
        not isinstance(name, str)
        or not name
        or len(name) > 32
        or not re.fullmatch(ALIAS_NAME_PATTERN, name)
    ):
        raise field_error(
            "alias",
            "Alias names have 1-32 characters: lowercase letters, digits, '_' or '-', starting "
            "with a letter.",
        )
    if is_reserved_alias_name(name):
        raise field_error(
            "alias",
            f"'{name}' is reserved: 'latest' and 'v<number>' always mean the newest ready "
            "version and version <number>.",
        )
    return name


def _clean_text(value: Any, *, field: str, max_length: int) -> str:
    return bounded_text(value, field=field, max_length=max_length, allow_newlines=True).strip()
