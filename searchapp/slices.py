"""Randomised slices of logged first pages: what lets the logs teach more than the order that produced them.

Two small, disjoint shares of logged text searches are changed on purpose and the change is logged on
the event:

- **swap** (``LOUPE_SWAP_SHARE``): one uniformly chosen pair among the top ``LOUPE_SWAP_MAX_POSITION``
  trades places: half the time an adjacent pair (k, k+1), otherwise (k, k+d) with d uniform in
  2..``LOUPE_SWAP_MAX_OFFSET``. Comparing clicks at the two positions with and without the swap measures
  how much more one is examined than the other (``ranking.propensity`` for the list's adjacent pairs). The
  page's grid is known only after it renders, so the pairs are drawn in rank space: on a grid of d columns
  (k, k+d) are vertical neighbours, (k, k+1) row neighbours or the end of one row and the start of the
  next, and ``ranking.grid_propensity`` maps each to the cells of the layout the person reported.
- **explore** (``LOUPE_EXPLORE_SHARE``): one candidate from below the page (uniformly among the
  positions page_size + 1 .. ``LOUPE_RERANK_DEPTH``) is shown at a uniformly chosen slot between
  ``LOUPE_EXPLORE_MIN_POSITION`` and the end of the page; the items from that slot down move one
  place. Without it an image that the current order keeps off the first page can never be clicked,
  so no ranker trained on the logs could learn to bring it up (the logs only ever confirm themselves).

A search is in at most one slice, so "normal" pages stay normal for the propensity estimate.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TypeVar

from django.conf import settings

T = TypeVar("T")


@dataclass(frozen=True)
class Slice:
    """Which slice a search fell into: ``swap`` or ``explore`` or nothing."""

    kind: str = ""

    @property
    def needs_depth(self) -> int:
        """How many candidates the slice needs ranked (exploration draws from below the page)."""
        return settings.LOUPE_RERANK_DEPTH if self.kind == "explore" else 0


def draw_slice(rng: random.Random | None = None) -> Slice:
    """Put a logged first page into the swap slice, the explore slice, or neither."""
    draw = (rng or random).random()
    if draw < settings.LOUPE_SWAP_SHARE:
        return Slice("swap")
    if draw < settings.LOUPE_SWAP_SHARE + settings.LOUPE_EXPLORE_SHARE:
        return Slice("explore")
    return Slice()


def swap_pair(
    ranked: list[T], deepest: int, max_offset: int, rng: random.Random | None = None
) -> tuple[list[T], int | None, int | None]:
    """Swap (k, k+d) with both in 1..deepest: d = 1 half the time, else uniform in 2..max_offset (grid pairs).

    Returns the order and the pair (upper, lower), or the order unchanged and (None, None) when it is too short.
    """
    rng = rng or random
    deepest = min(deepest, len(ranked))
    widest = min(max_offset, deepest - 1)
    if widest < 1:
        return ranked, None, None
    offset = 1 if widest == 1 or rng.random() < 0.5 else rng.randint(2, widest)
    k = rng.randint(1, deepest - offset)
    return swap(ranked, k, k + offset), k, k + offset


def swap(ranked: list[T], upper: int, lower: int) -> list[T]:
    """The order with the items at 1-based positions ``upper`` and ``lower`` traded."""
    swapped = list(ranked)
    swapped[upper - 1], swapped[lower - 1] = swapped[lower - 1], swapped[upper - 1]
    return swapped


def explore_below_page(
    ranked: list[T], page_size: int, pool_end: int, first_slot: int, rng: random.Random | None = None
) -> tuple[list[T], int | None, int | None]:
    """Show one candidate from positions page_size+1..pool_end at a slot in first_slot..page_size.

    Returns the new order, the slot (1-based) and the explored candidate's position before the move;
    the order is unchanged (and both None) when there is nothing below the page to explore.
    """
    rng = rng or random
    pool_end = min(pool_end, len(ranked))
    first_slot = max(1, min(first_slot, page_size))
    if pool_end <= page_size:
        return ranked, None, None
    source = rng.randint(page_size + 1, pool_end)
    slot = rng.randint(first_slot, page_size)
    return move_up(ranked, source, slot), slot, source


def move_up(ranked: list[T], source: int, slot: int) -> list[T]:
    """The order with the item at ``source`` (1-based) shown at ``slot``; those from the slot down move one place."""
    moved = list(ranked)
    if source <= len(moved):
        moved.insert(slot - 1, moved.pop(source - 1))
    return moved
