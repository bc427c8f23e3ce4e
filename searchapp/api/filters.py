"""The metadata filters of an API search: the ``filter`` parameter (the page's query syntax) and one
parameter per declared field (``author=smith``, ``date_from=2020-01-01``, ``licence_not=cc-by-nc``).

Thin: it reads parameters and hands them to ``collection.metadata_filter``, which owns the syntax.
"""

from __future__ import annotations

from collection.metadata import declared_fields
from collection.metadata_filter import NO_FILTER, InvalidFilter, MetadataFilter, filter_from_params, parse_filter_tokens
from collection.models import MetadataField

# Parameters of a search that are never metadata filters (SearchParamsSerializer's, and the API key's).
SEARCH_PARAMS = {"q", "tags", "page", "page_size", "min_score", "max_drop", "user", "session", "sort", "filter"}
SEARCH_PARAMS |= {"collapse"}
SEARCH_PARAMS |= {"image", "image_id", "format", "api_key"}


def _lists(params) -> dict[str, list[str]]:
    """Each parameter's values: a QueryDict (query string, form) repeats keys; a JSON body gives one value or a list."""
    if hasattr(params, "getlist"):
        return {name: params.getlist(name) for name in params}
    return {name: value if isinstance(value, list) else [value] for name, value in params.items()}


def request_filter(params, filter_text: str = "") -> MetadataFilter:
    """The filter these request parameters ask for; ``InvalidFilter`` (400) when one cannot be understood.

    ``date_from`` / ``date_to`` bound the field named ``date``, else the collection's date field (as
    ``sort=date`` orders by it), so a partner can write them whatever the field is called.
    """
    candidates = {
        name: [str(v) for v in values] for name, values in _lists(params).items() if name not in SEARCH_PARAMS
    }
    if not candidates and not filter_text:
        return NO_FILTER
    fields = declared_fields()
    dates = sorted(name for name, kind in fields.items() if kind == MetadataField.Kind.DATE)
    if "date" not in fields and dates:
        for ending in ("_from", "_to"):
            if f"date{ending}" in candidates:
                candidates.setdefault(f"{dates[0]}{ending}", []).extend(candidates.pop(f"date{ending}"))
    combined = filter_from_params(candidates, fields)
    if filter_text:
        rest, parsed = parse_filter_tokens(filter_text, fields)
        if rest:
            known = ", ".join(sorted(fields)) or "none are declared"
            raise InvalidFilter(f"{rest!r} is not a filter on a declared field (the fields are: {known}).")
        combined = combined.and_also(parsed)
    return combined
