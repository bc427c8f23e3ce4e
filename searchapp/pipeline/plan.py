"""Plan: how deep each channel goes, which logged slice the search falls in, and the key of its order.

The serving configuration itself (production's, or the user's experiment arm) comes from
``ranking.experiments.serving.plan_search``; this stage turns it and the validated request into
the depths retrieval needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from collection.metadata_filter import MetadataFilter
from ranking.experiments.serving import ServingPlan
from searchapp.pipeline.request import DATE, ValidSearch
from searchapp.slices import Slice, draw_slice


@dataclass(frozen=True)
class Depths:
    """How many candidates the served order holds, and how deep each text channel goes (0: none run)."""

    candidates: int
    text: int
    slice: Slice

    @property
    def fusing(self) -> bool:
        return self.text > 0


def plan_depths(search: ValidSearch, plan: ServingPlan, *, logged: bool) -> Depths:
    """The depths for ``search`` under ``plan``; a ``logged`` first page of text may fall into a slice.

    One result past the page tells whether a next page exists without counting them all. With text
    channels every channel goes LOUPE_CHANNEL_DEPTH deep (whole multiples of it), so that the fused
    order of the first pages does not change from page to page. Reranking takes CLIP deeper (its top
    ``rerank_depth``), not the text channels: they bring their best matches for the page's depth (50
    on a first page), whose fusion weight beats CLIP's deep ranks anyway.
    """
    text_search = search.kind == "text"
    depth = min(settings.LOUPE_MAX_CANDIDATES, search.page * search.page_size + 1)
    text_depth = depth
    fusing = text_search and settings.LOUPE_TEXT_CHANNEL
    if (text_search and plan.ranker is not None) or plan.teams is not None:
        depth = max(depth, plan.rerank_depth)
    if search.sort == DATE:
        # The date order is of every result that passes the cut, not of the page's depth: take the same
        # candidates on every page, so that paging through "newest first" never shows one twice.
        depth = max(depth, settings.LOUPE_DATE_SORT_DEPTH)
    # A logged slice perturbs the relevance order to measure position bias; a date order has none to perturb.
    sliced = logged and text_search and search.page == 1 and plan.teams is None and search.sort != DATE
    logged_slice = draw_slice() if sliced else Slice()
    # A later page of an explored first page is cut from an order as deep as the first page's, so that
    # it is the same order (the same result-cache entry) the explored candidate was moved up in.
    continues = Slice("explore") if search.page > 1 and search.request.explored is not None else Slice()
    depth = min(settings.LOUPE_MAX_CANDIDATES, max(depth, logged_slice.needs_depth, continues.needs_depth))
    if not fusing:
        return Depths(depth, 0, logged_slice)
    step = settings.LOUPE_CHANNEL_DEPTH
    return Depths(max(depth, step * -(-depth // step)), step * -(-text_depth // step), logged_slice)


@dataclass(frozen=True)
class OrderKey:
    """Everything a served order depends on (``searchapp.result_cache``): a change to any is a new key."""

    encoder_version_id: int
    catalogue_revision: int  # collection.revisions: an edited caption, tag or file anywhere is a new key
    query: str  # normalised (feedback.impressions.query_key)
    tags: tuple[str, ...]
    metadata: MetadataFilter  # the metadata filters (hashable terms)
    sort: str  # relevance, or date: the passing results newest first
    collapse: bool  # near-duplicates collapsed to the best-ranked of each group
    depth: int
    text_depth: int
    fusion: tuple  # (method, weights) of collection.fusion_setting.Fusion; () without text channels
    fusion_weights: tuple[float, ...]  # the channels' own weights; () without text channels
    feedback_channel: tuple[float, float] | None  # the feedback channel's (weight, min similarity); None: off
    rerank_depth: int
    ranker_version_id: int | None
    # Whose taste the order was personalised for (ranking.personal); None: the shared order. A personalised
    # order is one user's: keyed by their key, it is never served to anyone else.
    personal_user: str | None
    min_score: float | None  # the request's thresholds, then the serving configuration's
    max_relative_drop: float | None
    plan_min_score: float | None
    plan_max_relative_drop: float | None
