"""Tag counts over the collection, for suggestions (autocomplete) and the tag facet."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection

from collection.tags import clean_tag


@dataclass(frozen=True)
class TagCount:
    tag: str
    images: int


def tag_suggestions(prefix: str = "", *, limit: int = 10) -> list[TagCount]:
    """The most used tags starting with ``prefix`` (cleaned like tags are), most used first.

    Scans the tag arrays; fine to a few hundred thousand images. Beyond that, a materialised
    view refreshed by a task would serve the same query.
    """
    cleaned = clean_tag(prefix)
    pattern = cleaned.replace("\\", "\\\\").replace("%", "\\%") + "%"  # LIKE wildcards are literal
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tag, count(*) FROM searchapp_image, unnest(tags) AS tag "
            "WHERE tag LIKE %s GROUP BY tag ORDER BY count(*) DESC, tag LIMIT %s",
            [pattern, int(limit)],
        )
        return [TagCount(tag, int(count)) for tag, count in cursor.fetchall()]
