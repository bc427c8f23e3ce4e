"""Parsing what a user typed: free text plus ``tag:`` filters (``tag:dog beach``, ``tag:"hot dog"``) and
filters on the declared metadata fields (``author:smith date>=2020-01-01 -licence:cc-by-nc``; the syntax
is ``collection.metadata_filter``'s)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

from collection.metadata_filter import NO_FILTER, InvalidFilter, MetadataFilter, parse_filter_tokens
from collection.tags import clean_tag

_TAG_TOKEN = re.compile(r'(?i)(?<!\S)tag:(?:"([^"]*)"|(\S*))')


class QuerySyntaxError(ValueError):
    """What the user typed cannot be understood; the message says how to fix it."""


@dataclass(frozen=True)
class ParsedQuery:
    text: str
    tags: tuple[str, ...]
    metadata: MetadataFilter = NO_FILTER


def strip_control_characters(text: str) -> str:
    """Drop control and format characters (NUL, escape codes, bidi overrides); keep white space as spaces."""
    return "".join(" " if ch.isspace() else ch for ch in text if ch.isspace() or unicodedata.category(ch)[0] != "C")


def parse_query(raw: str, fields: Mapping[str, str] | None = None) -> ParsedQuery:
    """Split ``tag:`` tokens, and filters on the declared ``fields`` (name -> kind), from the free text.

    A query of tags alone searches for the tags' words.
    """
    text = strip_control_characters(raw)
    if text.count('"') % 2 and 'tag:"' in text.lower():
        raise QuerySyntaxError('A quoted tag is not closed: write tag:"hot dog".')
    tags: list[str] = []
    for match in _TAG_TOKEN.finditer(text):
        tag = clean_tag(match.group(1) if match.group(1) is not None else match.group(2))
        if not tag:
            raise QuerySyntaxError("An empty tag: write tag:NAME, e.g. tag:dog.")
        if tag not in tags:
            tags.append(tag)
    free_text = " ".join(_TAG_TOKEN.sub(" ", text).split())
    metadata = NO_FILTER
    if fields:
        try:
            free_text, metadata = parse_filter_tokens(free_text, fields)
        except InvalidFilter as exc:
            raise QuerySyntaxError(str(exc)) from None
    if not free_text and tags:
        free_text = " ".join(tags)
    return ParsedQuery(free_text, tuple(tags), metadata)
