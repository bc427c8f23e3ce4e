"""Metadata filters: what a search may ask of the images' declared fields, and the SQL that asks it.

One ``MetadataFilter`` is a conjunction of ``Term``s; each term is one field's condition:

- any of some values (``author:smith,jones``; keyword, boolean, and exact numbers): containment,
  ``metadata @> {"author": "smith"}``, answered by the GIN ``jsonb_path_ops`` index;
- a range (``date>=2020-01-01``, ``price:10..20``, ``date:2021-06``): jsonb comparisons on
  ``metadata -> 'field'``, answered by that field's B-tree (``collection.metadata.ensure_range_index``);
- either, negated (``-licence:cc-by-nc``): images without the field pass a negated term.

The same terms come from the page's query syntax (``parse_filter_tokens``) and the API's parameters
(``filter_from_params``), and go into the WHERE clause of every channel (``collection.index``,
``collection.text_index``), so a filter selects candidates before the nearest are taken rather than
removing them after.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from collection.metadata import InvalidMetadata, clean_boolean, clean_date, clean_number, clean_value
from collection.models import MetadataField
from core.errors import Refused

Scalar = str | int | float | bool

MAX_TERMS = 20
MAX_VALUES_PER_TERM = 50

# A filter token of the query syntax: [-]name then : >= <= > or <, then a value (quoted, or up to white space).
FILTER_TOKEN = re.compile(r'(?<!\S)(-?)([a-z][a-z0-9_]*)(>=|<=|:|>|<)(?:"([^"]*)"|(\S*))')


class InvalidFilter(Refused):
    """A filter that cannot be understood or does not fit its field; the message says how to write it."""

    code = "invalid_filter"

    def __init__(self, message: str, *, field: str | None = "filter") -> None:
        super().__init__(message, field=field)


@dataclass(frozen=True)
class Term:
    """One field's condition. ``values``: any of them; else a range (either bound may be open)."""

    field: str
    kind: str
    values: tuple[Scalar, ...] = ()
    low: Scalar | None = None
    high: Scalar | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True
    negated: bool = False

    def sql(self, alias: str) -> tuple[str, list]:
        """The condition over ``{alias}.metadata``, with %s placeholders, and its parameters."""
        column = f"{alias}.metadata"
        if self.values:
            condition = " OR ".join([f"{column} @> %s::jsonb"] * len(self.values))
            params = [json.dumps({self.field: value}) for value in self.values]
        else:
            value = f"{column} -> '{self.field}'"  # field names are checked identifiers (METADATA_FIELD_NAME)
            json_type = "number" if self.kind == MetadataField.Kind.NUMBER else "string"
            parts, params = [f"jsonb_typeof({value}) = '{json_type}'"], []
            if self.low is not None:
                parts.append(f"{value} {'>=' if self.low_inclusive else '>'} %s::jsonb")
                params.append(json.dumps(self.low))
            if self.high is not None:
                parts.append(f"{value} {'<=' if self.high_inclusive else '<'} %s::jsonb")
                params.append(json.dumps(self.high))
            condition = " AND ".join(parts)
        # A missing field makes the range NULL: coalesce so that a negated term lets such images through.
        return (f"NOT coalesce(({condition}), false)" if self.negated else f"({condition})"), params

    def describe(self) -> str:
        """The term in the query syntax (for the page and the API's meta)."""
        sign = "-" if self.negated else ""
        if self.values:
            return f"{sign}{self.field}:" + ",".join(_shown(v) for v in self.values)
        bounds = []
        if self.low is not None:
            bounds.append(f"{self.field}{'>=' if self.low_inclusive else '>'}{_shown(self.low)}")
        if self.high is not None:
            bounds.append(f"{self.field}{'<=' if self.high_inclusive else '<'}{_shown(self.high)}")
        return sign + " ".join(bounds)


def _shown(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return f'"{text}"' if (" " in text or "," in text) else text


@dataclass(frozen=True)
class MetadataFilter:
    """All the terms a search's images must pass (hashable: part of the result cache's key)."""

    terms: tuple[Term, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.terms)

    def sql(self, alias: str = "i") -> tuple[str, list]:
        parts, params = [], []
        for term in self.terms:
            condition, term_params = term.sql(alias)
            parts.append(condition)
            params.extend(term_params)
        return " AND ".join(parts) or "TRUE", params

    def named_sql(self, alias: str = "i", prefix: str = "meta") -> tuple[str, dict]:
        """The same with %(name)s placeholders, for queries written with named parameters."""
        condition, params = self.sql(alias)
        names = [f"{prefix}{i}" for i in range(len(params))]
        pieces = condition.split("%s")
        named = pieces[0] + "".join(f"%({name})s{piece}" for name, piece in zip(names, pieces[1:], strict=True))
        return named, dict(zip(names, params, strict=True))

    def describe(self) -> str:
        return " ".join(term.describe() for term in self.terms)

    def and_also(self, other: MetadataFilter) -> MetadataFilter:
        combined = tuple(dict.fromkeys([*self.terms, *other.terms]))
        if len(combined) > MAX_TERMS:
            raise InvalidFilter(f"At most {MAX_TERMS} metadata filters per search.")
        return MetadataFilter(combined)


NO_FILTER = MetadataFilter()


def make_term(
    field: str, op: str, raw: str, fields: Mapping[str, str], *, negated: bool = False, quoted: bool = False
) -> Term:
    """One term from a field, an operator (``:``, ``>=``, ``<=``, ``>``, ``<``) and the text of its value.

    ``:`` takes several values separated by commas (any of them), or a range ``low..high`` for numbers
    and dates; a date may be a year, a month or a day (``date:2021`` is all of 2021). A ``quoted`` keyword
    is one value, commas and all.
    """
    kind = fields.get(field)
    if kind is None:
        known = ", ".join(sorted(fields)) or "none are declared"
        raise InvalidFilter(f"There is no metadata field {field!r}; the fields are: {known}.")
    raw = raw.strip()
    if not raw:
        raise InvalidFilter(f"The filter on {field} has no value: write {field}:VALUE.")
    try:
        if kind in (MetadataField.Kind.KEYWORD, MetadataField.Kind.BOOLEAN):
            if op != ":":
                raise InvalidFilter(f"{field} is a {kind} field: compare it with {field}:VALUE, not {op}.")
            return Term(field, kind, values=_values(field, kind, raw, quoted=quoted), negated=negated)
        if kind == MetadataField.Kind.NUMBER:
            return _number_term(field, op, raw, negated)
        return _date_term(field, op, raw, negated)
    except InvalidMetadata as exc:
        raise InvalidFilter(str(exc)) from None


def _values(field: str, kind: str, raw: str, *, quoted: bool = False) -> tuple[Scalar, ...]:
    parts = [raw] if quoted else [part for part in raw.split(",") if part.strip()]
    if len(parts) > MAX_VALUES_PER_TERM:
        raise InvalidFilter(f"At most {MAX_VALUES_PER_TERM} values in one filter on {field}.")
    if kind == MetadataField.Kind.BOOLEAN:
        return tuple(dict.fromkeys(clean_boolean(field, part) for part in parts))
    return tuple(dict.fromkeys(clean_value(field, kind, part) for part in parts))


def _number_term(field: str, op: str, raw: str, negated: bool) -> Term:
    kind = MetadataField.Kind.NUMBER
    if op == ":" and ".." in raw:
        low, _, high = raw.partition("..")
        return Term(
            field,
            kind,
            low=clean_number(field, low) if low.strip() else None,
            high=clean_number(field, high) if high.strip() else None,
            negated=negated,
        )
    if op == ":":
        return Term(field, kind, values=_values(field, kind, raw), negated=negated)
    value = clean_number(field, raw)
    if op in (">=", ">"):
        return Term(field, kind, low=value, low_inclusive=op == ">=", negated=negated)
    return Term(field, kind, high=value, high_inclusive=op == "<=", negated=negated)


def date_period(field: str, raw: str) -> tuple[str, str]:
    """The half-open interval [start, end) of stored date strings that ``raw`` (a year, month, day or moment) covers."""
    raw = raw.strip()
    if re.fullmatch(r"\d{4}", raw):
        year = int(raw)
        return f"{year:04d}-01-01", f"{year + 1:04d}-01-01"
    if re.fullmatch(r"\d{4}-\d{2}", raw):
        year, month = int(raw[:4]), int(raw[5:])
        if not 1 <= month <= 12:
            raise InvalidFilter(f"{raw!r} is not a month: write YYYY-MM.")
        following = (year + 1, 1) if month == 12 else (year, month + 1)
        return f"{year:04d}-{month:02d}-01", f"{following[0]:04d}-{following[1]:02d}-01"
    start = clean_date(field, raw)
    if len(start) == 10:
        return start, (dt.date.fromisoformat(start) + dt.timedelta(days=1)).isoformat()
    return start, (dt.datetime.fromisoformat(start) + dt.timedelta(seconds=1)).isoformat()


def _date_term(field: str, op: str, raw: str, negated: bool) -> Term:
    kind = MetadataField.Kind.DATE
    if op == ":":
        low_raw, between, high_raw = raw.partition("..")
        if not between:
            high_raw = low_raw
        low = date_period(field, low_raw)[0] if low_raw.strip() else None
        high = date_period(field, high_raw)[1] if high_raw.strip() else None
        return Term(field, kind, low=low, high=high, high_inclusive=False, negated=negated)
    start, end = date_period(field, raw)
    if op == ">=":
        return Term(field, kind, low=start, negated=negated)
    if op == ">":
        return Term(field, kind, low=end, negated=negated)
    if op == "<=":
        return Term(field, kind, high=end, high_inclusive=False, negated=negated)
    return Term(field, kind, high=start, high_inclusive=False, negated=negated)


def mentions_fields(text: str) -> bool:
    """Whether ``text`` holds something shaped like a filter token (besides tag:), so the schema is worth reading."""
    return any(match.group(2) != "tag" for match in FILTER_TOKEN.finditer(text))


def parse_filter_tokens(text: str, fields: Mapping[str, str]) -> tuple[str, MetadataFilter]:
    """Take the tokens naming declared fields out of ``text``; returns (the rest, their filter).

    A token naming no declared field is left in the text: "time:10pm" stays words when no field
    ``time`` exists.
    """
    terms: list[Term] = []

    def take(match: re.Match) -> str:
        negated, field, op, quoted, bare = match.groups()
        if field not in fields:
            return match.group(0)
        raw, is_quoted = (quoted, True) if quoted is not None else (bare, False)
        terms.append(make_term(field, op, raw, fields, negated=bool(negated), quoted=is_quoted))
        return " "

    if text.count('"') % 2 and re.search(r'(?<!\S)-?[a-z][a-z0-9_]*(?:>=|<=|:|>|<)"', text):
        raise InvalidFilter('A quoted filter value is not closed: write author:"jane doe".', field="q")
    rest = FILTER_TOKEN.sub(take, text)
    return " ".join(rest.split()), NO_FILTER.and_also(MetadataFilter(tuple(terms)))


# API parameter endings and the operator each stands for.
PARAM_ENDINGS = {"_from": ">=", "_to": "<=", "_not": ":"}


def filter_from_params(params: Mapping[str, Iterable[str]], fields: Mapping[str, str]) -> MetadataFilter:
    """The filter a search's query parameters ask for: ``FIELD=v`` (repeat or comma-separate for any of
    several), ``FIELD_not=v``, ``FIELD_from=`` / ``FIELD_to=`` (inclusive bounds for dates and numbers).
    Parameters naming no declared field are not filters and are left alone."""
    terms: list[Term] = []
    for name, raw_values in params.items():
        values = [value for value in raw_values if value != ""]
        if not values:
            continue
        if name in fields:
            terms.append(_param_term(name, ":", values, fields, negated=False))
            continue
        for ending, op in PARAM_ENDINGS.items():
            field = name.removesuffix(ending)
            if name.endswith(ending) and field in fields:
                if op != ":" and fields[field] not in (MetadataField.Kind.NUMBER, MetadataField.Kind.DATE):
                    raise InvalidFilter(f"{name}: only date and number fields have ranges.", field=name)
                if op == ":":
                    terms.append(_param_term(field, op, values, fields, negated=True, name=name))
                else:
                    terms.extend(_param_term(field, op, [value], fields, negated=False, name=name) for value in values)
    return NO_FILTER.and_also(MetadataFilter(tuple(terms)))


def _param_term(
    field: str, op: str, values: list[str], fields: Mapping[str, str], *, negated: bool, name: str = ""
) -> Term:
    try:
        kind = fields[field]
        if op == ":" and kind == MetadataField.Kind.KEYWORD:
            # Each parameter value is one keyword (commas included); repeat the parameter for several.
            cleaned = tuple(dict.fromkeys(clean_value(field, kind, v) for v in values))
            return Term(field, kind, values=cleaned, negated=negated)
        return make_term(field, op, ",".join(values), fields, negated=negated)
    except InvalidFilter as exc:
        raise InvalidFilter(str(exc), field=name or field) from None
    except InvalidMetadata as exc:
        raise InvalidFilter(str(exc), field=name or field) from None
