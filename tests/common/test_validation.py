"""The shared bounded-input checks raise ApplicationError with their callers' messages."""

import math

import pytest

from common.errors import ApplicationError
from common.validation import (
    bounded_text,
    has_control_characters,
    is_finite_number,
    number_in_range,
    string_map,
)


def test_bounded_text_accepts_text_within_the_limit_and_none_as_blank():
    assert bounded_text("line one\nline two", field="note", max_length=20, allow_newlines=True) == (
        "line one\nline two"
    )
    assert bounded_text(None, field="note", max_length=5) == ""


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("x" * 1_001, "note has at most 1,000 characters."),
        (42, "note has at most 1,000 characters."),
        ("bell\x07", "note must not contain control characters."),
        ("two\nlines", "note must not contain control characters."),
    ],
)
def test_bounded_text_refuses_with_the_default_messages(value, message):
    with pytest.raises(ApplicationError) as raised:
        bounded_text(value, field="note", max_length=1_000)
    assert raised.value.message == message
    assert raised.value.extra == {"note": [message]}


def test_bounded_text_uses_the_callers_messages():
    with pytest.raises(ApplicationError) as raised:
        bounded_text(3, field="description", max_length=10, not_text="Must be text.")
    assert raised.value.message == "Must be text."


def test_number_in_range_is_strict_and_refuses_booleans_and_non_finite_values():
    assert number_in_range(0.05, field="alpha", low=0, high=0.5) == 0.05
    for value in (True, "0.1", math.nan, math.inf):
        with pytest.raises(ApplicationError, match=r"^alpha must be a number\.$"):
            number_in_range(value, field="alpha", low=0, high=0.5, extra={"alpha": value})
    with pytest.raises(ApplicationError) as raised:
        number_in_range(0.5, field="alpha", low=0, high=0.5, extra={"alpha": 0.5})
    assert raised.value.message == "alpha must be between 0 and 0.5."
    assert raised.value.extra == {"alpha": 0.5}


def test_string_map_formats_its_message_templates():
    arguments = {
        "field": "tags",
        "max_items": 2,
        "max_key_length": 8,
        "max_value_length": 4,
        "key_pattern": r"[a-z]+",
        "not_a_map": "Not a map.",
        "too_many": "At most {max_items}; got {count:,}.",
        "bad_key": "Key {shown}: 1-{max_key_length} letters.",
        "value_not_text": "Tag {key!r}: text.",
        "bad_value": "Tag {key!r}: at most {max_value_length}.",
    }
    assert string_map({"team": "ml"}, **arguments) == {"team": "ml"}
    assert string_map(None, **arguments) == {}
    cases = [
        ([], "Not a map."),
        ({"a": "1", "b": "2", "c": "3"}, "At most 2; got 3."),
        ({"Team": "ml"}, "Key 'Team': 1-8 letters."),
        ({"team": 1}, "Tag 'team': text."),
        ({"team": "vision"}, "Tag 'team': at most 4."),
    ]
    for value, message in cases:
        with pytest.raises(ApplicationError) as raised:
            string_map(value, **arguments)
        assert raised.value.extra == {"tags": [message]}


def test_character_and_number_predicates():
    assert has_control_characters("a\x00b")
    assert not has_control_characters("a\tb", allow_newlines=True)
    assert is_finite_number(3) and is_finite_number(2.5)
    assert not any(is_finite_number(value) for value in (True, math.nan, "3", None))
