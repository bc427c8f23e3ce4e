"""Image metadata: the declared schema (``MetadataField``) and the one check every write goes through.

There is one collection per deployment, so one schema: an admin declares each field with its kind
(keyword, number, date, boolean). ``validate_metadata`` is what ingest (API and CLI) and updates call
before they store an image's metadata; it refuses an undeclared field or a value of the wrong kind
with a message naming the field, so filters and date sort can trust what is stored.

Values are stored in the form filters compare (``collection.metadata_filter``):

- keyword: the text, trimmed (at most 300 characters);
- number: a JSON number (numeric strings, as CSV columns give them, are converted);
- date: ``YYYY-MM-DD``, or ``YYYY-MM-DDTHH:MM:SS`` for a date and time (aware times converted to UTC).
  Both forms are fixed-width and start with the day, so their text order is their time order: a
  range ``date >= 2020-01-01 AND date < 2020-02-01`` is a comparison of strings, and one B-tree
  expression index per date field answers it;
- boolean: true or false (``"true"``, ``"yes"``, ``"1"`` and their opposites are converted).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping

from django.db import connection

from collection.models import METADATA_FIELD_NAME, MetadataField
from core.errors import Refused
from core.replicas import read_connection

KEYWORD_MAX_CHARS = 300
MAX_FIELDS_PER_IMAGE = 50

TRUE_WORDS = {"true", "yes", "1"}
FALSE_WORDS = {"false", "no", "0"}


class InvalidMetadata(Refused):
    """Metadata that does not fit the declared schema; the message names the field and what it expects."""

    code = "invalid_metadata"

    def __init__(self, message: str, *, field: str | None = "metadata") -> None:
        super().__init__(message, field=field)


def declared_fields() -> dict[str, str]:
    """The declared fields, name -> kind."""
    return dict(MetadataField.objects.values_list("name", "kind"))


def validate_metadata(data: object, fields: Mapping[str, str] | None = None) -> dict:
    """``data`` checked against the declared schema and put in stored form; ``InvalidMetadata`` otherwise.

    ``data`` is a JSON object (a dict) of field name -> value; a value of None (JSON null) means "no
    value" and is dropped. ``fields`` (name -> kind) defaults to the declared ``MetadataField`` rows;
    pass it when checking many images against one read of the schema.
    """
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise InvalidMetadata("metadata must be a JSON object of field name -> value.")
    if len(data) > MAX_FIELDS_PER_IMAGE:
        raise InvalidMetadata(f"At most {MAX_FIELDS_PER_IMAGE} metadata fields per image.")
    fields = declared_fields() if fields is None else fields
    cleaned: dict = {}
    for name, value in data.items():
        kind = fields.get(name) if isinstance(name, str) else None
        if kind is None:
            known = ", ".join(sorted(fields)) or "none are declared yet (admin: Metadata fields)"
            raise InvalidMetadata(f"Unknown metadata field {name!r}; the declared fields are: {known}.")
        if value is None or value == "":
            continue
        cleaned[name] = clean_value(name, kind, value)
    return cleaned


def clean_value(name: str, kind: str, value: object) -> str | float | int | bool:
    """One value in stored form, or ``InvalidMetadata`` saying what the field expects."""
    if kind == MetadataField.Kind.KEYWORD:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise InvalidMetadata(f'{name} is a keyword field: give text, e.g. {name}: "smith".')
        text = " ".join(str(value).split())
        if len(text) > KEYWORD_MAX_CHARS:
            raise InvalidMetadata(f"{name} is at most {KEYWORD_MAX_CHARS} characters.")
        return text
    if kind == MetadataField.Kind.NUMBER:
        return clean_number(name, value)
    if kind == MetadataField.Kind.DATE:
        return clean_date(name, value)
    if kind == MetadataField.Kind.BOOLEAN:
        return clean_boolean(name, value)
    raise InvalidMetadata(f"{name} has an unknown kind {kind!r}.")


def clean_number(name: str, value: object) -> int | float:
    if isinstance(value, bool):
        raise InvalidMetadata(f"{name} is a number field: give a number, not true/false.")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise InvalidMetadata(f"{name} is a number field: {value!r} is not a number.") from None
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidMetadata(f"{name} is a number field: give a finite number.")
    return int(value) if float(value).is_integer() and abs(value) < 2**53 else float(value)


def clean_date(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidMetadata(f"{name} is a date field: give YYYY-MM-DD or an ISO date and time.")
    text = value.strip()
    try:
        if len(text) == 10:
            return dt.date.fromisoformat(text).isoformat()
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidMetadata(f"{name} is a date field: {text!r} is not YYYY-MM-DD or an ISO date and time.") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment.replace(microsecond=0).isoformat()


def clean_boolean(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower() if isinstance(value, str | int) else ""
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise InvalidMetadata(f"{name} is a boolean field: give true or false.")


def range_index_name(name: str) -> str:
    return f"image_metadata_{name}_btree"


def declare_field(name: str, kind: str, description: str = "") -> MetadataField:
    """Declare (or change the kind of) a field, with the index its range filters need."""
    field = MetadataField(name=name, kind=kind, description=description)
    field.full_clean(validate_unique=False)
    field, _ = MetadataField.objects.update_or_create(name=name, defaults={"kind": kind, "description": description})
    ensure_range_index(field)
    return field


def values_not_fitting(name: str, kind: str, limit: int = 5) -> tuple[int, list[str]]:
    """How many stored images have a ``name`` value that ``kind`` would refuse, and the first few of them.

    Asked before a field's kind changes: filters and date sort trust stored values to fit their kind,
    so a change that would make some of them lie is refused until those images are corrected.
    """
    bad, examples = 0, []
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, metadata -> %s FROM searchapp_image WHERE metadata ? %s ORDER BY id", [name, name])
        for image_id, value in cursor:
            try:
                stored = json.loads(value) if isinstance(value, str) else value
                if clean_value(name, kind, stored) != stored:
                    raise InvalidMetadata("stored in another form")
            except InvalidMetadata:
                bad += 1
                if len(examples) < limit:
                    examples.append(f"image {image_id}: {stored!r}")
    return bad, examples


def ensure_range_index(field: MetadataField) -> None:
    """A B-tree over ``metadata -> name`` for number and date fields, so range filters (and the count that
    chooses between an exact and an HNSW scan) read an index, not every image.

    The expression is a jsonb comparison, not a cast: a cast would fail on a value stored before the
    field's kind changed, jsonb's order never fails (numbers order as numbers, strings as text).
    Keyword and boolean fields need none: the GIN jsonb_path_ops index answers their containment.
    """
    if field.kind not in (MetadataField.Kind.NUMBER, MetadataField.Kind.DATE):
        return
    if not METADATA_FIELD_NAME.match(field.name):  # it goes into SQL text below
        raise InvalidMetadata(f"{field.name!r} is not a valid field name.", field="name")
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE INDEX IF NOT EXISTS {range_index_name(field.name)} ON searchapp_image "
            f"((metadata -> '{field.name}'))"
        )


def image_dates(image_ids: list[int], field: str) -> dict[int, str]:
    """The stored ``field`` date of each of these images that has one (stored dates order as text)."""
    if not image_ids:
        return {}
    with read_connection().cursor() as cursor:  # a replica inside a search (core.replicas)
        cursor.execute(
            "SELECT id, metadata ->> %s FROM searchapp_image "
            "WHERE id = ANY(%s) AND jsonb_typeof(metadata -> %s) = 'string'",
            [field, list(image_ids), field],
        )
        return {int(image_id): value for image_id, value in cursor.fetchall()}
