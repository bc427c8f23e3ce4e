"""The grid estimator's input from the search log: first pages with a reported layout, their swaps and clicks.

Normal and swapped first pages of text searches count, as for the list curve (``ranking.training_data.
swap_counts``); explored pages shift items and are left out, and so are pages with no layout (they are
lists to the estimator: the per-rank curve covers them).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from django.conf import settings

from feedback.erasure import exclude_erased
from feedback.layout import Layout
from feedback.models import Click, SearchEvent
from ranking.grid_propensity import GridPropensity, LoggedPage, count_pairs, grid_propensity
from ranking.propensity import PropensityCurve


def laid_out_pages(since: datetime | None) -> list[LoggedPage]:
    """Every logged first page with a layout, as the estimator reads it."""
    events = exclude_erased(
        SearchEvent.objects.filter(kind="text", page=1, explore_position__isnull=True, layout_columns__isnull=False)
    )
    if since is not None:
        events = events.filter(created_at__gte=since)
    rows = list(
        events.values_list(
            "pk", "layout_columns", "layout_first_row", "layout_last_row", "result_count", "swap_position", "swap_with"
        )
    )
    clicked = defaultdict(set)
    for event_id, position in Click.objects.filter(event_id__in=[r[0] for r in rows]).values_list(
        "event_id", "position"
    ):
        clicked[event_id].add(position)
    pages = []
    for event_id, columns, first, last, result_count, swap, swap_with in rows:
        swapped = None if swap is None else (swap, swap_with or swap + 1)
        pages.append(
            LoggedPage(Layout(tuple(columns), first, last), result_count, frozenset(clicked[event_id]), swapped)
        )
    return pages


def estimated_grid_propensity(since: datetime | None, fallback: PropensityCurve) -> GridPropensity:
    """Per-cell examination for each layout seen, shrunk toward ``fallback`` (the list curve training uses)."""
    pairs = count_pairs(laid_out_pages(since), settings.LOUPE_SWAP_MAX_POSITION, settings.LOUPE_SWAP_MAX_OFFSET)
    return grid_propensity(pairs, fallback, settings.LOUPE_GRID_PRIOR_CLICKS)
