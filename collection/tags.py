"""Tag cleaning: one rule for ingestion, filters and suggestions."""

from __future__ import annotations

from collections.abc import Iterable

MAX_TAG_LENGTH = 100


def clean_tag(raw: str) -> str:
    """Lower-case, underscores as spaces, white space trimmed and folded: ``" Car_Side "`` -> ``"car side"``."""
    return " ".join(str(raw).replace("_", " ").lower().split())[:MAX_TAG_LENGTH].strip()


def clean_tags(raw_tags: Iterable[str]) -> list[str]:
    """Clean each tag, drop empty ones and duplicates, keep first-seen order."""
    seen: dict[str, None] = {}
    for raw in raw_tags:
        tag = clean_tag(raw)
        if tag:
            seen.setdefault(tag, None)
    return list(seen)


def split_tag_list(text: str) -> list[str]:
    """Tags written as one comma-separated string (CSV cells, labels files, form fields)."""
    return clean_tags(text.split(","))
