"""validate_metadata: the declared schema refuses unknown fields and wrong types, and stores comparable forms."""

import pytest

from collection.metadata import InvalidMetadata, validate_metadata

FIELDS = {"date": "date", "author": "keyword", "price": "number", "hdr": "boolean"}


def test_values_are_put_in_stored_form():
    cleaned = validate_metadata(
        {"date": "2021-06-01T12:30:00+02:00", "author": "  Jane   Doe ", "price": "12.50", "hdr": "yes"}, FIELDS
    )
    # An aware time becomes UTC without its offset, so stored dates order as text.
    assert cleaned == {"date": "2021-06-01T10:30:00", "author": "Jane Doe", "price": 12.5, "hdr": True}
    assert validate_metadata({"date": "2021-06-01", "price": 3}, FIELDS) == {"date": "2021-06-01", "price": 3}


def test_null_and_empty_values_are_dropped():
    assert validate_metadata({"author": None, "price": ""}, FIELDS) == {}
    assert validate_metadata(None, FIELDS) == {}


def test_an_unknown_field_is_refused_naming_the_declared_ones():
    with pytest.raises(InvalidMetadata, match="Unknown metadata field 'camera'.*author, date, hdr, price"):
        validate_metadata({"camera": "x"}, FIELDS)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"price": "cheap"}, "price is a number field"),
        ({"price": True}, "price is a number field"),
        ({"price": float("nan")}, "finite"),
        ({"date": "01/06/2021"}, "date is a date field"),
        ({"date": 20210601}, "date is a date field"),
        ({"hdr": "maybe"}, "hdr is a boolean field"),
        ({"author": ["a", "b"]}, "author is a keyword field"),
        ({"author": "x" * 301}, "at most 300"),
    ],
)
def test_a_wrong_type_is_refused_with_what_the_field_expects(data, message):
    with pytest.raises(InvalidMetadata, match=message) as raised:
        validate_metadata(data, FIELDS)
    assert raised.value.status == 400 and raised.value.code == "invalid_metadata"


def test_metadata_must_be_an_object():
    with pytest.raises(InvalidMetadata, match="JSON object"):
        validate_metadata(["author", "smith"], FIELDS)
