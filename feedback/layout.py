"""The layout a person saw a result list in: cards per row of the rendered grid and the rows on screen.

Examination in a grid depends on the row and the column, not only on the rank: rank 4 (the end of a
4-card row) and rank 5 (the start of the next) are not one step apart in attention. The page measures
its real grid after rendering (element offsets: a justified row holds as many cards as their aspect
ratios fit, so the window width alone does not say it) and sends it with the search's first beacon;
partners send the same shape through the API. Impressions keep their rank; (row, column) follows from
the rank and the cards per row (``Layout.cell``). The first report for an event is kept: a resend or a
later report (after a resize) does not rewrite what the person saw first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from core.errors import Refused
from feedback.capture import owned_event
from feedback.identity import Viewer
from feedback.models import SearchEvent

MAX_COLUMNS = 24  # cards in one row; wider than any page or partner grid we know of
MAX_ROWS = 200  # rows described; a page holds at most LOUPE_MAX_PAGE_SIZE cards
MAX_ROW_NUMBER = 10_000
MAX_TEXT = 4_000  # characters of a layout sent as text (the page's form field): 200 rows fit in ~1,000


class LayoutError(Refused):
    """A layout that is not one: the message says which part."""

    code = "invalid_layout"


@dataclass(frozen=True)
class Layout:
    """``columns[r - 1]`` cards in row r (the last entry repeats for the rows below it); rows on screen."""

    columns: tuple[int, ...]
    first_row: int | None = None
    last_row: int | None = None

    @property
    def width(self) -> int:
        """The layout's class for examination: cards in the first row (1 on a phone, about 4 on a desktop)."""
        return self.columns[0]

    def cell(self, position: int) -> tuple[int, int]:
        """(row, column), both 1-based, of the card at 1-based ``position``."""
        remaining = position
        for row, size in enumerate(self.columns, start=1):
            if remaining <= size:
                return row, remaining
            remaining -= size
        last = self.columns[-1]
        row = len(self.columns) + (remaining - 1) // last + 1
        return row, (remaining - 1) % last + 1


def parse_layout(raw: object) -> Layout:
    """A layout from its JSON shape ``{"columns": 4 | [4, 4, 3], "rows_on_screen": [1, 3]}``, or LayoutError."""
    if isinstance(raw, str):
        if len(raw) > MAX_TEXT:
            raise LayoutError(f"layout is longer than {MAX_TEXT} characters.", field="layout")
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser goes
            raise LayoutError("layout is not JSON.", field="layout") from None
    if not isinstance(raw, dict):
        raise LayoutError('layout is an object: {"columns": ..., "rows_on_screen": [first, last]}.', field="layout")
    unknown = set(raw) - {"columns", "rows_on_screen"}
    if unknown:
        raise LayoutError(f"layout has unknown keys: {', '.join(sorted(unknown))}.", field="layout")
    columns = raw.get("columns")
    if _whole(columns):
        columns = [columns]
    if not isinstance(columns, list) or not 1 <= len(columns) <= MAX_ROWS:
        raise LayoutError(
            f"layout.columns is the cards per row: a whole number or a list of 1-{MAX_ROWS} of them.",
            field="layout.columns",
        )
    if not all(_whole(n) and 1 <= n <= MAX_COLUMNS for n in columns):
        raise LayoutError(f"Each row holds 1 to {MAX_COLUMNS} cards.", field="layout.columns")
    first = last = None
    rows = raw.get("rows_on_screen")
    if rows is not None:
        if not (isinstance(rows, list) and len(rows) == 2 and all(_whole(n) for n in rows)):
            raise LayoutError("layout.rows_on_screen is [first, last] row numbers.", field="layout.rows_on_screen")
        first, last = rows
        if not 1 <= first <= last <= MAX_ROW_NUMBER:
            raise LayoutError(
                f"layout.rows_on_screen needs 1 <= first <= last <= {MAX_ROW_NUMBER}.", field="layout.rows_on_screen"
            )
    return Layout(tuple(columns), first, last)


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def event_layout(event: SearchEvent) -> Layout | None:
    """The layout stored on an event, or None when none was reported (a list: the per-rank curve applies)."""
    if not event.layout_columns:
        return None
    return Layout(tuple(event.layout_columns), event.layout_first_row, event.layout_last_row)


def store_layout(event: SearchEvent, layout: Layout) -> bool:
    """Keep the layout on the event unless one is there already; True if this report was stored."""
    stored = SearchEvent.objects.filter(pk=event.pk, layout_columns__isnull=True).update(
        layout_columns=list(layout.columns), layout_first_row=layout.first_row, layout_last_row=layout.last_row
    )
    return stored == 1


def record_layout(viewer: Viewer, event_id: str, layout: Layout) -> bool:
    """Store the layout of one of the viewer's searches (another's, or none: ``UnknownEvent``, 404)."""
    return store_layout(owned_event(viewer, event_id), layout)
