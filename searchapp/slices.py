"""Randomised slices of logged first pages: what lets the logs teach more than the order that produced them.

Two small, disjoint shares of logged text searches are changed on purpose and the change is logged on
the event:

- **swap** (``LOUPE_SWAP_SHARE``): one uniformly chosen adjacent pair (k, k+1) among the top
  ``LOUPE_SWAP_MAX_POSITION`` trades places. Comparing clicks at k and k+1 with and without the swap
  measures how much more position k is examined than k+1 (``ranking.propensity``).
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


def swap_adjacent(ranked: list[T], last_upper: int, rng: random.Random | None = None) -> tuple[list[T], int | None]:
    """Swap a uniformly chosen pair (k, k+1), k in 1..last_upper: the randomised slice propensities come from."""
    last_upper = min(last_upper, len(ranked) - 1)
    if last_upper < 1:
        return ranked, None
    k = (rng or random).randint(1, last_upper)
    swapped = list(ranked)
    swapped[k - 1], swapped[k] = swapped[k], swapped[k - 1]
    return swapped, k


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
