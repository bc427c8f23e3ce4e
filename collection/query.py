"""Parsing what a user typed: free text plus ``tag:`` filters (``tag:dog beach``, ``tag:"hot dog"``)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from collection.tags import clean_tag

_TAG_TOKEN = re.compile(r'(?i)(?<!\S)tag:(?:"([^"]*)"|(\S*))')


class QuerySyntaxError(ValueError):
    """What the user typed cannot be understood; the message says how to fix it."""


@dataclass(frozen=True)
class ParsedQuery:
    text: str
    tags: tuple[str, ...]


def strip_control_characters(text: str) -> str:
    """Drop control and format characters (NUL, escape codes, bidi overrides); keep white space as spaces."""
    return "".join(" " if ch.isspace() else ch for ch in text if ch.isspace() or unicodedata.category(ch)[0] != "C")


def parse_query(raw: str) -> ParsedQuery:
    """Split ``tag:`` tokens from the free text. A query of tags alone searches for the tags' words."""
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
    if not free_text and tags:
        free_text = " ".join(tags)
    return ParsedQuery(free_text, tuple(tags))
