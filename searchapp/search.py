"""The search service: one entry point for the page and the API.

Text to image, image to image (an uploaded image or "more like this" an image of the collection),
and image to text (which captions describe an image). ``SearchService.serve`` runs the stages of
``searchapp.pipeline`` in order: validate → plan → retrieve → fuse → features and rerank → slices →
page → log.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from django.conf import settings

from collection.encoders import EncoderChoice
from collection.fusion_setting import Fusion, serving_fusion
from collection.index import nearest_captions
from collection.models import Caption, EncoderVersion
from collection.versions import EncoderInfo, encoder_info, service_encoder_choice, serving_version, version_for
from core.errors import Refused
from core.metrics import FALLBACKS, observe_search
from core.replicas import on_replica, read_alias
from feedback.identity import Viewer
from feedback.impressions import record_search
from ranking.experiments.serving import ServingPlan, plan_search
from searchapp.pipeline.order import served_order
from searchapp.pipeline.page import SearchHit, apply_slice, continue_first_page, page_of
from searchapp.pipeline.plan import plan_depths
from searchapp.pipeline.request import DATE, InvalidQuery, NotIndexed, SearchError, SearchRequest, ValidSearch, validate
from searchapp.pipeline.response import SearchResponse, StageTimes, served_list
from searchapp.pipeline.retrieve import stored_vector

# The names callers import from here: the pipeline's stages are its implementation.
__all__ = [
    "CaptionHit",
    "InvalidQuery",
    "NotIndexed",
    "SearchError",
    "SearchHit",
    "SearchRequest",
    "SearchResponse",
    "SearchService",
    "served_list",
]


def service_for_encoder_version(version_id: int) -> SearchService | None:
    """A search service over another encoder version's vectors (an experiment arm), or None if it cannot serve."""
    loaded = service_encoder_choice(version_id)
    return SearchService(*loaded) if loaded is not None else None


@dataclass(frozen=True)
class CaptionHit:
    caption: Caption
    score: float


class SearchService:
    """Runs searches with the serving encoder (or the one given, for tests and benchmarks)."""

    def __init__(
        self, choice: EncoderChoice | None = None, version: EncoderVersion | None = None, fusion: Fusion | None = None
    ) -> None:
        if choice is None:
            choice, version = serving_version()
        elif version is None:
            version = version_for(choice)
        self.choice = choice
        self.encoder = choice.encoder
        self.version = version
        self.fusion = fusion  # None: the fitted setting for the version (collection.fusion_setting)

    @property
    def info(self) -> EncoderInfo:
        return encoder_info(self.choice, self.version)

    def search(self, request: SearchRequest, viewer: Viewer | None = None) -> SearchResponse:
        """Run a search; with a ``viewer`` the served list is logged and the response carries its event id."""
        started = time.perf_counter()
        try:
            search = validate(request)
            # A date-sorted list compares no rankers: it is served by production's configuration, never an arm's.
            plan = plan_search(viewer if request.sort != DATE else None, rerank_allowed=request.kind == "text")
            service = self
            if plan.encoder_version_id and plan.encoder_version_id != self.version.pk:
                service = service_for_encoder_version(plan.encoder_version_id)
                if service is None:
                    FALLBACKS.labels("encoder_arm").inc()
                    service = self
            response = service.serve(search, viewer, plan, started)
        except Refused:
            observe_search(request.kind, "refused", time.perf_counter() - started)
            raise
        observe_search(request.kind, "served", time.perf_counter() - started, response.timings_ms)
        return response

    def serve(self, search: ValidSearch, viewer: Viewer | None, plan: ServingPlan, started: float) -> SearchResponse:
        """Run a search ``validate`` accepted, with ``plan`` (production's configuration or the user's arm).

        Its reads go to a usable replica (and again to the primary if they fail there: ``core.replicas``);
        the log of what was served is written to the primary, once.
        """
        response = on_replica(lambda: self.answer(search, viewer, plan, started))
        return response if viewer is None else self.log(response, search.request, viewer, time.perf_counter())

    def answer(self, search: ValidSearch, viewer: Viewer | None, plan: ServingPlan, started: float) -> SearchResponse:
        """The search's response, unlogged: it only reads, from the database ``core.replicas.read_alias`` names."""
        depths = plan_depths(search, plan, logged=viewer is not None)
        fusion = self.fusion or serving_fusion(self.version)
        made = served_order(self.encoder, self.version, search, depths, plan, fusion, viewer)
        if made.cached:  # nothing was encoded or retrieved: the lookup counts as retrieval
            encoded = started
            retrieved = ranked = time.perf_counter()
        else:
            encoded = started + made.encode_seconds
            retrieved = encoded + made.retrieve_seconds
            ranked = retrieved + made.rank_seconds
        sliced = apply_slice(continue_first_page(made.order.ranked, search), depths.slice, search.page_size)
        page = page_of(search, sliced, made.order, made.query, made.revision)
        times = StageTimes(started, encoded, retrieved, ranked, paged=time.perf_counter())
        return SearchResponse(
            kind=search.kind,
            query_text=search.text,
            tags=search.tags,
            filters=search.metadata.describe(),
            sort=search.sort,
            hits=page.hits,
            page=search.page,
            page_size=search.page_size,
            has_next=page.has_next,
            encoder=self.info,
            timings_ms=times.as_ms(),
            channel_weights=made.weights,
            cached=made.cached,
            ranker=made.order.ranker_label,
            experiment_id=plan.experiment_id,
            arm=plan.arm,
            swap_position=sliced.swap_position,
            swap_with=sliced.swap_with,
            explore_position=sliced.explore_position,
            explore_from=sliced.explore_from,
        )

    @staticmethod
    def log(response: SearchResponse, request: SearchRequest, viewer: Viewer, paged: float) -> SearchResponse:
        """Record the served list; the response carries the event that clicks and ratings refer to."""
        event_id = record_search(served_list(response, request.image_id), viewer, defer=settings.LOUPE_DEFER_SEARCH_LOG)
        timings = {**response.timings_ms, "log": round((time.perf_counter() - paged) * 1000, 2)}
        return replace(response, event_id=event_id, timings_ms=timings)

    def describe(self, image_id: int, *, k: int = 5) -> list[CaptionHit]:
        """Image to text: the captions of the collection that best describe this image."""
        if not 1 <= k <= 100:
            raise InvalidQuery("k must be between 1 and 100.", field="k")
        return on_replica(lambda: self._captions_describing(image_id, k))

    def _captions_describing(self, image_id: int, k: int) -> list[CaptionHit]:
        vector = stored_vector(self.version, image_id)
        neighbours = nearest_captions(self.version, vector, k=k)
        captions = Caption.objects.using(read_alias()).in_bulk([n.id for n in neighbours])
        return [CaptionHit(captions[n.id], n.score) for n in neighbours if n.id in captions]
