"""The API's JSON parser, bounded: body size and nesting depth.

DRF's own parser reads the request stream whole, past ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (Django checks it
only for ``request.body`` and forms), and ``json`` recurses once per nesting level, so a body of a few
thousand ``[`` answered 500 (RecursionError). Issue 19, finding 9.
"""

from __future__ import annotations

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser
from rest_framework.utils import json

# Deeper than any request the API takes (a batch item is 3 levels down), far below the recursion limit.
MAX_JSON_DEPTH = 32


class BodyTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"
    default_detail = "The request body is too large."


def json_depth(value) -> int:
    """How deeply lists and objects nest in ``value`` (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


class BoundedJSONParser(JSONParser):
    """JSON bodies of at most ``DATA_UPLOAD_MAX_MEMORY_SIZE`` bytes (413) and ``MAX_JSON_DEPTH`` levels (400)."""

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = (stream.read() if limit is None else stream.read(limit + 1)) if stream is not None else b""
        if limit is not None and len(raw) > limit:
            raise BodyTooLarge(f"The JSON body is over the {limit:,}-byte limit.")
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            data = (
                json.loads(raw.decode(encoding))
                if self.strict
                else json.loads(raw.decode(encoding), parse_constant=None)
            )
        except RecursionError:
            raise ParseError(f"The JSON nests deeper than {MAX_JSON_DEPTH} levels.") from None
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise ParseError(f"JSON parse error - {exc}") from None
        if json_depth(data) > MAX_JSON_DEPTH:
            raise ParseError(f"The JSON nests deeper than {MAX_JSON_DEPTH} levels.")
        return data
