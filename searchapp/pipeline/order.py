"""The served order of a search (retrieve → fuse → features and rerank), through the result cache.

What is cached is the whole order before the logged slice and paging, so every search still draws
its own slice and is logged with its own event (``searchapp.result_cache``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from django.conf import settings
from django.utils import timezone

from collection.encoders import Encoder
from collection.fusion_setting import Fusion
from collection.metadata import image_dates
from collection.models import EncoderVersion
from collection.near_duplicates import first_of_each_group, groups_of
from collection.revisions import current_revision
from collection.text_channels import channel_weights
from feedback.identity import Viewer
from feedback.impressions import query_key
from ranking.experiments.serving import ServingPlan
from ranking.personal import Personal
from searchapp.pipeline.fuse import first_stage, fused_weights
from searchapp.pipeline.plan import Depths, OrderKey
from searchapp.pipeline.request import DATE, ValidSearch
from searchapp.pipeline.rerank import Reranked, RerankInput, rank
from searchapp.pipeline.retrieve import feedback_channel_serves, retrieve
from searchapp.result_cache import result_cache


@dataclass(frozen=True)
class RankedOrder:
    """A search's whole served order and how long each stage took to make it (0 when it came cached)."""

    order: Reranked
    query: RerankInput  # what the page's features are computed against
    weights: dict[str, float]  # the channels that took part, with the weights their fusion used
    encode_seconds: float
    retrieve_seconds: float
    rank_seconds: float = 0.0  # fusion and reranking (or interleaving)
    cached: bool = False
    revision: int = 0  # the catalogue revision it was made at: the page's images are cached under it too


def served_order(
    encoder: Encoder,
    version: EncoderVersion,
    search: ValidSearch,
    depths: Depths,
    plan: ServingPlan,
    fusion: Fusion,
    viewer: Viewer | None,
) -> RankedOrder:
    # One small read per search, and only with the caches on: an edit committed in any process moves the
    # revision, so what this process cached before it is never served again (collection.revisions).
    revision = current_revision() if result_cache.ttl() > 0 else 0
    personal = personal_scope(search, plan, viewer)
    key = order_key(version, search, depths, plan, fusion, revision, personal)
    found = result_cache.get(key) if key is not None else None
    if found is not None:
        return found
    retrieved = retrieve(encoder, version, search, depths, plan)
    ranking_started = time.perf_counter()
    query = RerankInput(version, retrieved.vector, search.text, depths.candidates, personal)
    order = rank(first_stage(retrieved, fusion), plan, query, kind=search.kind, viewer=viewer)
    if search.collapse:
        order = collapse_near_duplicates(order, version)
    if search.sort == DATE:
        order = newest_first(order, search.date_field)
    made = RankedOrder(
        order=order,
        query=query,
        weights=fused_weights(retrieved, fusion),
        encode_seconds=retrieved.encode_seconds,
        retrieve_seconds=retrieved.retrieve_seconds,
        rank_seconds=time.perf_counter() - ranking_started,
        revision=revision,
    )
    if key is not None:
        result_cache.put(key, made)
    return made


def collapse_near_duplicates(order: Reranked, version: EncoderVersion) -> Reranked:
    """The order with one image per near-duplicate group, the best-ranked, before the date sort and paging
    (so a page never shows five frames of one burst, and positions are those of the images shown)."""
    ids = [r.candidate.image_id for r in order.ranked]
    groups = groups_of(version, ids)
    if not groups:
        return order
    kept = set(first_of_each_group(ids, groups))
    return replace(order, ranked=[r for r in order.ranked if r.candidate.image_id in kept])


def newest_first(order: Reranked, date_field: str) -> Reranked:
    """The served order's images by ``date_field``, newest first; images without a date after them, in
    their relevance order (the sort is stable). The relevance cut already chose which images are here."""
    dates = image_dates([r.candidate.image_id for r in order.ranked], date_field)
    # sorted(reverse=True) stays stable: images of the same date keep their relevance order.
    dated = sorted(
        (r for r in order.ranked if r.candidate.image_id in dates),
        key=lambda r: dates[r.candidate.image_id],
        reverse=True,
    )
    undated = [r for r in order.ranked if r.candidate.image_id not in dates]
    return replace(order, ranked=dated + undated, ranker_label=f"{order.ranker_label}, by {date_field}")


def personal_scope(search: ValidSearch, plan: ServingPlan, viewer: Viewer | None) -> Personal | None:
    """Whose taste this search's features read, or None for the shared order.

    Every switch must allow it: the deployment (``LOUPE_PERSONALISE``), the experiment arm or production's
    configuration (``personalise``, empty: allowed), the request (the API's ``personalise=false``, the page's
    cookie), and a known viewer of a text search. Not only reranked searches: the page's logged features
    must carry the taste too, or no ranker could ever learn from it. Choices before now only
    (``ranking.personal``: the bound that keeps the search's own click out of its training row).
    """
    if not (settings.LOUPE_PERSONALISE and plan.personalise is not False and search.request.personalise):
        return None
    if viewer is None or search.kind != "text":
        return None
    return Personal(viewer.user_key, timezone.now())


def order_key(
    version: EncoderVersion,
    search: ValidSearch,
    depths: Depths,
    plan: ServingPlan,
    fusion: Fusion,
    revision: int = 0,
    personal: Personal | None = None,
) -> OrderKey | None:
    """The cache key, or None where the order is not shared: interleaved lists are drawn per user, and deep
    pages are rare and their orders large."""
    if search.kind != "text" or plan.teams is not None or depths.candidates > result_cache.max_depth:
        return None
    request = search.request
    return OrderKey(
        encoder_version_id=version.pk,
        catalogue_revision=revision,
        query=query_key(search.text),
        tags=search.tags,
        metadata=search.metadata,
        sort=search.sort,
        collapse=search.collapse,
        depth=depths.candidates,
        text_depth=depths.text,
        # The fusion and the weights it will use: a calibration that changes them is a new key at once.
        fusion=fusion.key if depths.fusing else (),
        fusion_weights=(version.channel_weight, *channel_weights()) if depths.fusing else (),
        feedback_channel=(
            (settings.LOUPE_FEEDBACK_CHANNEL_WEIGHT, settings.LOUPE_FEEDBACK_CHANNEL_MIN_SIMILARITY)
            if feedback_channel_serves(search, plan)
            else None
        ),
        rerank_depth=plan.rerank_depth,
        ranker_version_id=plan.ranker.version.pk if plan.ranker is not None else None,
        personal_user=personal.user_key if personal is not None else None,
        min_score=request.min_score,
        max_relative_drop=request.max_relative_drop,
        plan_min_score=plan.min_score,
        plan_max_relative_drop=plan.max_relative_drop,
    )
