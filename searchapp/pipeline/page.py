"""Slices and page: the logged slice applied to the whole order, then the page's hits with their features.

The slice (``searchapp.slices``) changes the order before paging, so a swapped pair or an explored
candidate is shown and logged exactly where it was served.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from collection.models import Image
from core.replicas import read_alias
from feedback.impressions import query_key
from ranking.features import candidate_features
from searchapp.pipeline.fuse import Ranked
from searchapp.pipeline.request import ValidSearch
from searchapp.pipeline.rerank import Reranked, RerankInput, Scored
from searchapp.result_cache import page_images
from searchapp.slices import Slice, explore_below_page, move_up, swap_pair


@dataclass(frozen=True)
class SearchHit:
    image: Image
    score: float  # the ranking score: fused (0-1) with text channels, else the CLIP cosine
    position: int  # 1-based, over the whole ranked list
    similarity: float | None = None  # CLIP cosine between the query and the image
    channels: tuple[str, ...] = ("clip",)  # which channels found it: clip, caption, fts
    features: tuple[float, ...] = ()  # ranking.features.NAMES order, as computed at serve time
    team: str = ""  # interleaving: the arm whose ranker contributed this image

    @property
    def matched_text(self) -> bool:
        return "caption" in self.channels or "fts" in self.channels


@dataclass(frozen=True)
class SlicedOrder:
    """The served order after the logged slice, and where the slice changed it."""

    ranked: list[Ranked]
    swap_position: int | None = None  # the upper position of the pair swapped on purpose (the propensity slice)
    swap_with: int | None = None  # its lower position: k + 1, or k + d for a grid pair
    explore_position: int | None = None  # the slot given to a candidate from below the page
    explore_from: int | None = None  # where that candidate stood before


@dataclass(frozen=True)
class Page:
    hits: list[SearchHit]
    has_next: bool


def apply_slice(ranked: list[Ranked], logged_slice: Slice, page_size: int) -> SlicedOrder:
    if logged_slice.kind == "swap":
        swapped, upper, lower = swap_pair(
            ranked, min(settings.LOUPE_SWAP_MAX_POSITION, page_size), settings.LOUPE_SWAP_MAX_OFFSET
        )
        return SlicedOrder(swapped, swap_position=upper, swap_with=lower)
    if logged_slice.kind == "explore":
        explored, position, came_from = explore_below_page(
            ranked, page_size, settings.LOUPE_RERANK_DEPTH, settings.LOUPE_EXPLORE_MIN_POSITION
        )
        return SlicedOrder(explored, explore_position=position, explore_from=came_from)
    return SlicedOrder(ranked)


def continue_first_page(ranked: list[Ranked], search: ValidSearch) -> list[Ranked]:
    """A later page's order: the first page as shown, then what it did not show, in order.

    Exploration moves a candidate from below the first page onto it; cut from the unchanged order, the
    next page would show that candidate a second time and never show the one it pushed off the page
    ("Load more" appended a duplicate card). The pager's links carry the move (``explored``), so the
    later page moves the same candidate up again and continues where the first page ended.
    """
    if search.page == 1 or search.request.explored is None:
        return ranked
    source, slot = search.request.explored
    return move_up(ranked, source, slot)


def page_of(search: ValidSearch, sliced: SlicedOrder, order: Reranked, query: RerankInput, revision: int = 0) -> Page:
    """The page's hits: features reused from reranking where it scored them all, else computed here."""
    start = search.start
    shown = sliced.ranked[start : start + search.page_size]
    scored = order.scored
    if not all(r.candidate.image_id in scored for r in shown):
        candidates = [r.candidate for r in shown]
        matrix, facts = candidate_features(
            query.version, query.vector, candidates, query_key(query.text), query.depth, query.personal
        )
        scored = {c.image_id: Scored(row, facts.get(c.image_id)) for c, row in zip(candidates, matrix, strict=True)}
    # One query with the captions as an array (a prefetch measured ~2 ms a page), and recently shown
    # images from memory.
    images = page_images(
        [r.candidate.image_id for r in shown], lambda ids: Image.with_caption_texts(ids, using=read_alias()), revision
    )
    hits = [
        SearchHit(
            images[r.candidate.image_id],
            r.score,
            start + i + 1,
            similarity(r, scored[r.candidate.image_id]),
            tuple(sorted(r.candidate.channel_ranks)),
            tuple(float(x) for x in scored[r.candidate.image_id].row),
            order.teams.get(r.candidate.image_id, ""),
        )
        for i, r in enumerate(shown)
        if r.candidate.image_id in images
    ]
    return Page(hits, has_next=len(sliced.ranked) > start + search.page_size)


def similarity(ranked: Ranked, scored: Scored) -> float | None:
    """The CLIP cosine: from retrieval when CLIP found the image, else as the features read it."""
    if ranked.candidate.clip_cosine is not None:
        return ranked.candidate.clip_cosine
    return scored.facts.clip_cosine if scored.facts is not None else None
