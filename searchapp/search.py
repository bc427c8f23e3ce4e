"""The search service: one entry point for the page and the API.

Text to image, image to image (an uploaded image or "more like this" an image of the collection),
and image to text (which captions describe an image). Later stages (features, reranking,
impression logging) plug in between retrieval and the response.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
import uuid
from dataclasses import dataclass, field, replace

import numpy as np
from django.conf import settings

from collection.cut import cut_length
from collection.encoders import EncoderChoice
from collection.fusion import reciprocal_rank_fusion
from collection.images import CheckedImage
from collection.index import Neighbour, nearest_captions, nearest_images
from collection.models import Caption, EncoderVersion, Image, ImageEmbedding
from collection.query import QuerySyntaxError, parse_query
from collection.tags import clean_tags
from collection.text_channels import channel_weights, start_text_channels
from collection.versions import EncoderInfo, encoder_info, service_encoder_choice, serving_version, version_for
from core.errors import Refused, UnknownImage
from core.metrics import FALLBACKS, observe_search
from feedback.identity import Viewer
from feedback.impressions import ServedList, ShownResult, count, query_key, record_search
from ranking.experiments.interleaving import team_draft
from ranking.experiments.serving import ServingPlan, plan_search
from ranking.features import NAMES, Candidate, candidate_features
from searchapp.result_cache import page_images, result_cache
from searchapp.slices import Slice, draw_slice, explore_below_page, swap_adjacent

logger = logging.getLogger(__name__)


class SearchError(Refused):
    """A search the service refuses."""

    code = "invalid_search"


class InvalidQuery(SearchError):
    code = "invalid_query"


class NotIndexed(SearchError):
    code = "not_indexed"
    status = 409


@dataclass(frozen=True)
class SearchRequest:
    """What to search for. Exactly one of ``text``, ``image_id`` and ``image`` is given."""

    text: str = ""
    image_id: int | None = None
    image: CheckedImage | None = None
    tags: tuple[str, ...] = ()
    page: int = 1
    page_size: int = 0  # 0: the configured default
    min_score: float | None = None
    max_relative_drop: float | None = None

    @property
    def kind(self) -> str:
        """ "similar" (an image of the collection), "image" (an upload) or "text"."""
        return "similar" if self.image_id is not None else "image" if self.image is not None else "text"


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
class SearchResponse:
    kind: str  # "text", "image" or "similar"
    query_text: str
    tags: tuple[str, ...]
    hits: list[SearchHit]
    page: int
    page_size: int
    has_next: bool
    encoder: EncoderInfo
    timings_ms: dict[str, float] = field(default_factory=dict)
    channel_weights: dict[str, float] = field(default_factory=dict)
    ranker: str = "embedding"
    experiment_id: int | None = None
    arm: str = ""
    event_id: uuid.UUID | None = None  # the logged SearchEvent that clicks and ratings refer to
    swap_position: int | None = None  # k when positions k and k+1 were swapped (the propensity slice)
    explore_position: int | None = None  # the slot given to a candidate from below the page (exploration)
    explore_from: int | None = None  # where that candidate stood before
    cached: bool = False  # the order came from the result cache (searchapp.result_cache)

    @property
    def first_position(self) -> int:
        return self.hits[0].position if self.hits else 0

    @property
    def last_position(self) -> int:
        return self.hits[-1].position if self.hits else 0


@dataclass(frozen=True)
class Ranked:
    """A candidate and the score of the order it is served in (first-stage score, or the reranker's)."""

    candidate: Candidate
    score: float


@dataclass(frozen=True)
class RankedOrder:
    """A search's whole served order before paging and the logged slices: what the result cache keeps."""

    ranked: list[Ranked]
    computed: dict[int, tuple]  # image id -> (feature row, facts) for the candidates reranking scored
    teams: dict[int, str]
    ranker_label: str
    vector: np.ndarray
    weights: dict[str, float]  # the channels that took part, with their fusion weights
    encode_seconds: float
    retrieve_seconds: float
    rank_seconds: float = 0.0  # fusion and reranking (or interleaving)
    cached: bool = False


def served_list(response: SearchResponse, query_image_id: int | None) -> ServedList:
    """What the search log keeps of a response: the list exactly as shown, with its serve-time features."""
    return ServedList(
        kind=response.kind,
        query_text=response.query_text,
        tags=response.tags,
        page=response.page,
        page_size=response.page_size,
        encoder_version_id=response.encoder.version_id,
        feature_names=NAMES,
        shown=[ShownResult(h.image.pk, h.position, h.score, h.features, h.team) for h in response.hits],
        latency_ms=response.timings_ms.get("total"),
        query_image_id=query_image_id,
        ranker=response.ranker,
        experiment_id=response.experiment_id,
        arm=response.arm,
        swap_position=response.swap_position,
        explore_position=response.explore_position,
        explore_from=response.explore_from,
    )


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

    def __init__(self, choice: EncoderChoice | None = None, version: EncoderVersion | None = None) -> None:
        if choice is None:
            choice, version = serving_version()
        elif version is None:
            version = version_for(choice)
        self.choice = choice
        self.encoder = choice.encoder
        self.version = version

    @property
    def info(self) -> EncoderInfo:
        return encoder_info(self.choice, self.version)

    def validate(self, request: SearchRequest) -> tuple[str, tuple[str, ...], int, int]:
        given = sum([bool(request.text.strip()), request.image_id is not None, request.image is not None])
        if given == 0:
            raise InvalidQuery("Type something to search for, or give an image.", field="q")
        if given > 1:
            raise InvalidQuery("Search by text, by image id or by uploaded image: one at a time.")
        if len(request.text) > settings.LOUPE_MAX_QUERY_CHARS:
            raise InvalidQuery(
                f"The query is {len(request.text)} characters; the limit is {settings.LOUPE_MAX_QUERY_CHARS}.",
                field="q",
            )
        try:
            parsed = parse_query(request.text) if request.text else None
        except QuerySyntaxError as exc:
            raise InvalidQuery(str(exc), field="q") from None
        if parsed is not None and not parsed.text:
            raise InvalidQuery("Type something to search for.", field="q")
        tags = tuple(clean_tags([*(parsed.tags if parsed else ()), *request.tags]))
        if len(tags) > settings.LOUPE_MAX_QUERY_TAGS:
            raise InvalidQuery(f"At most {settings.LOUPE_MAX_QUERY_TAGS} tags per search.", field="tags")
        page_size = request.page_size or settings.LOUPE_PAGE_SIZE
        if not 1 <= page_size <= settings.LOUPE_MAX_PAGE_SIZE:
            raise InvalidQuery(f"page_size must be between 1 and {settings.LOUPE_MAX_PAGE_SIZE}.", field="page_size")
        if request.page < 1:
            raise InvalidQuery("page starts at 1.", field="page")
        if request.page * page_size > settings.LOUPE_MAX_CANDIDATES:
            raise InvalidQuery(
                f"Results go {settings.LOUPE_MAX_CANDIDATES} deep; page {request.page} is past that.", field="page"
            )
        if request.max_relative_drop is not None and not 0 <= request.max_relative_drop < 1:
            raise InvalidQuery("max_drop must be at least 0 and below 1.", field="max_drop")
        if request.min_score is not None and not -1 <= request.min_score <= 1:
            raise InvalidQuery("min_score must be between -1 and 1.", field="min_score")
        return (parsed.text if parsed else ""), tags, request.page, page_size

    def search(self, request: SearchRequest, viewer: Viewer | None = None) -> SearchResponse:
        """Run a search; with a ``viewer`` the served list is logged and the response carries its event id."""
        started = time.perf_counter()
        try:
            validated = self.validate(request)
            plan = plan_search(viewer, rerank_allowed=request.kind == "text")
            service = self
            if plan.encoder_version_id and plan.encoder_version_id != self.version.pk:
                service = service_for_encoder_version(plan.encoder_version_id)
                if service is None:
                    FALLBACKS.labels("encoder_arm").inc()
                    service = self
            response = service.serve(request, validated, viewer, plan, started)
        except Refused:
            observe_search(request.kind, "refused", time.perf_counter() - started)
            raise
        observe_search(request.kind, "served", time.perf_counter() - started, response.timings_ms)
        return response

    def serve(
        self,
        request: SearchRequest,
        validated: tuple[str, tuple[str, ...], int, int],
        viewer: Viewer | None,
        plan: ServingPlan,
        started: float,
    ) -> SearchResponse:
        """Run a search ``validate`` accepted, with ``plan`` (production's configuration or the user's arm)."""
        text, tags, page, page_size = validated
        kind = request.kind
        # One result past the page tells whether a next page exists without counting them all. With
        # text channels every channel goes LOUPE_CHANNEL_DEPTH deep (whole multiples of it), so that
        # the fused order of the first pages does not change from page to page. Reranking takes CLIP
        # deeper (its top ``rerank_depth``), not the text channels: they bring their best matches for the
        # page's depth (50 on a first page), whose fusion weight beats CLIP's deep ranks anyway.
        depth = min(settings.LOUPE_MAX_CANDIDATES, page * page_size + 1)
        text_depth = depth
        fusing = kind == "text" and settings.LOUPE_TEXT_CHANNEL
        serving_ranker = plan.ranker if kind == "text" else None
        if serving_ranker is not None or plan.teams is not None:
            depth = max(depth, plan.rerank_depth)
        sliced = viewer is not None and kind == "text" and page == 1 and plan.teams is None
        logged_slice = draw_slice() if sliced else Slice()
        depth = min(settings.LOUPE_MAX_CANDIDATES, max(depth, logged_slice.needs_depth))
        if fusing:
            step = settings.LOUPE_CHANNEL_DEPTH
            depth = max(depth, step * -(-depth // step))
            text_depth = step * -(-text_depth // step)
        key = None
        # Interleaved lists are drawn per user: never shared. Deep pages are rare and their orders large.
        if kind == "text" and plan.teams is None and depth <= result_cache.max_depth:
            key = (
                self.version.pk,
                query_key(text),
                tags,
                depth,
                text_depth if fusing else 0,
                self._fusion_weights() if fusing else (),
                plan.rerank_depth,
                serving_ranker.version.pk if serving_ranker is not None else None,
                request.min_score,
                request.max_relative_drop,
                plan.min_score,
                plan.max_relative_drop,
            )
        order = result_cache.get(key) if key is not None else None
        if order is None:
            order = self._order(request, text, tags, depth, text_depth if fusing else 0, serving_ranker, plan, viewer)
            if key is not None:
                result_cache.put(key, order)
        ranked, computed, teams, vector = order.ranked, order.computed, order.teams, order.vector
        ranker_label, weights = order.ranker_label, order.weights
        if order.cached:  # nothing was encoded or retrieved: the lookup counts as retrieval
            encoded, retrieved = started, time.perf_counter()
            ranked_at = retrieved
        else:
            encoded = started + order.encode_seconds
            retrieved = encoded + order.retrieve_seconds
            ranked_at = retrieved + order.rank_seconds
        start = (page - 1) * page_size
        swap_position = explore_position = explore_from = None
        if logged_slice.kind == "swap":
            ranked, swap_position = swap_adjacent(ranked, min(settings.LOUPE_SWAP_MAX_POSITION, page_size) - 1)
        elif logged_slice.kind == "explore":
            ranked, explore_position, explore_from = explore_below_page(
                ranked, page_size, settings.LOUPE_RERANK_DEPTH, settings.LOUPE_EXPLORE_MIN_POSITION
            )
        shown = ranked[start : start + page_size]
        if all(c.candidate.image_id in computed for c in shown):
            features = [computed[c.candidate.image_id][0] for c in shown]
            facts = {c.candidate.image_id: computed[c.candidate.image_id][1] for c in shown}
        else:
            candidates = [c.candidate for c in shown]
            features, facts = candidate_features(self.version, vector, candidates, query_key(text), depth)
        images = self._load_images([c.candidate.image_id for c in shown])
        hits = [
            SearchHit(
                images[c.candidate.image_id],
                c.score,
                start + i + 1,
                c.candidate.clip_cosine
                if c.candidate.clip_cosine is not None
                else facts[c.candidate.image_id].clip_cosine,
                tuple(sorted(c.candidate.channel_ranks)),
                tuple(float(x) for x in row),
                teams.get(c.candidate.image_id, ""),
            )
            for i, (c, row) in enumerate(zip(shown, features, strict=True))
            if c.candidate.image_id in images
        ]
        done = time.perf_counter()
        response = SearchResponse(
            kind=kind,
            query_text=text,
            tags=tags,
            hits=hits,
            page=page,
            page_size=page_size,
            has_next=len(ranked) > start + page_size,
            encoder=self.info,
            timings_ms={
                "encode": round((encoded - started) * 1000, 2),
                "retrieve": round((retrieved - encoded) * 1000, 2),
                "rank": round((ranked_at - retrieved) * 1000, 2),
                "page": round((done - ranked_at) * 1000, 2),
                "total": round((done - started) * 1000, 2),
            },
            channel_weights=weights,
            cached=order.cached,
            ranker=ranker_label,
            experiment_id=plan.experiment_id,
            arm=plan.arm,
            swap_position=swap_position,
            explore_position=explore_position,
            explore_from=explore_from,
        )
        if viewer is None:
            return response
        event_id = record_search(served_list(response, request.image_id), viewer, defer=settings.LOUPE_DEFER_SEARCH_LOG)
        logged = time.perf_counter()
        timings = {**response.timings_ms, "log": round((logged - done) * 1000, 2)}
        return replace(response, event_id=event_id, timings_ms=timings)

    def _order(
        self,
        request: SearchRequest,
        text: str,
        tags: tuple[str, ...],
        depth: int,
        text_depth: int,
        serving_ranker,
        plan: ServingPlan,
        viewer: Viewer | None,
    ) -> RankedOrder:
        """Encode, retrieve (CLIP and the text channels), fuse, then rerank or interleave: the served order."""
        started = time.perf_counter()
        kind = request.kind
        fusing = text_depth > 0
        if fusing:
            text_channels = start_text_channels(text, text_depth, tags)  # runs while CLIP encodes
        exclude: list[int] = []
        if kind == "similar":
            vector = self._stored_vector(request.image_id)
            exclude.append(request.image_id)
        elif kind == "image":
            vector = self.encoder.encode_images([request.image.open()])[0]
        else:
            vector = self.encoder.encode_query(text)
        encoded = time.perf_counter()

        neighbours = nearest_images(self.version, vector, k=depth, tags=tags, exclude_ids=exclude, text_flags=fusing)
        clip = self._cut(neighbours, request, plan)
        rankings = {"clip": clip}
        weights = {"clip": self.version.channel_weight}
        if fusing:
            found = text_channels()
            rankings.update(found.rankings)
            weights.update(found.weights)
        retrieved = time.perf_counter()

        if len(rankings) == 1:
            first_stage = [Candidate(n.id, n.score, i, {"clip": i}, n.score) for i, n in enumerate(clip, 1)]
        else:
            first_stage = self._fuse(rankings, weights, {n.id: n.score for n in clip})
        ranked = [Ranked(c, c.first_stage_score) for c in first_stage]
        ranker_label = "embedding"
        computed: dict[int, tuple] = {}  # image id -> (feature row, facts), when reranking computed them
        teams: dict[int, str] = {}  # interleaving: image id -> the arm whose ranker put it there
        if plan.teams is not None and kind == "text":
            ranked, computed, teams, ranker_label = self._interleave(plan, ranked, vector, text, depth, viewer)
        elif serving_ranker is not None:
            reranked = self._rerank(serving_ranker, ranked, vector, text, depth, plan.rerank_depth)
            if reranked is not None:
                (ranked, computed), ranker_label = reranked, serving_ranker.version.label
        return RankedOrder(
            ranked=ranked,
            computed=computed,
            teams=teams,
            ranker_label=ranker_label,
            vector=vector,
            weights={name: weights[name] for name in rankings},
            encode_seconds=encoded - started,
            retrieve_seconds=retrieved - encoded,
            rank_seconds=time.perf_counter() - retrieved,
        )

    def _fusion_weights(self) -> tuple[float, ...]:
        """The weights the fusion will use: a calibration that changes them is a new cache key at once."""
        return self.version.channel_weight, *channel_weights()

    @staticmethod
    def _fuse(rankings: dict[str, list[Neighbour]], weights: dict, clip_cosines: dict[int, float]) -> list[Candidate]:
        """Weighted RRF; each channel's rows say which images have text, so eligibility needs no extra query."""
        has_document: dict[int, bool] = {}
        has_captions: dict[int, bool] = {}
        for ranking in rankings.values():
            for n in ranking:
                has_document[n.id] = has_document.get(n.id, False) or bool(n.has_document)
                has_captions[n.id] = has_captions.get(n.id, False) or bool(n.has_captions)

        def eligible(channel: str, image_id: int) -> bool:
            if channel == "fts":
                return has_document[image_id]
            return has_captions[image_id] if channel == "caption" else True

        ids = {name: [n.id for n in ranking] for name, ranking in rankings.items()}
        fused = reciprocal_rank_fusion(ids, weights, eligible=eligible, k=settings.LOUPE_RRF_K)
        return [
            Candidate(c.image_id, c.score, position, dict(c.ranks), clip_cosines.get(c.image_id))
            for position, c in enumerate(fused, 1)
        ]

    def _interleave(
        self, plan: ServingPlan, ranked: list[Ranked], vector, text: str, depth: int, viewer: Viewer | None
    ) -> tuple[list[Ranked], dict, dict[int, str], str]:
        """Team-draft interleave the two arms' orders over the whole candidate list.

        The coin flips are seeded by (experiment salt, user, query): a user paging through one query sees
        one consistent interleaved list, while across users and queries the draws are independent.
        """
        orders: list[list[Ranked]] = []
        labels: list[str] = []
        computed: dict[int, tuple] = {}
        for team in plan.teams:
            order, label = ranked, "embedding"
            if team.ranker is not None:
                reranked = self._rerank(team.ranker, ranked, vector, text, depth, plan.rerank_depth)
                if reranked is not None:
                    (order, found), label = reranked, team.ranker.version.label
                    computed.update(found)
            orders.append(order)
            labels.append(label)
        seed = hashlib.sha256(f"{plan.salt}:{viewer.user_key if viewer else ''}:{text}".encode()).digest()
        by_id = [{r.candidate.image_id: r for r in order} for order in orders]
        merged = team_draft(
            [r.candidate.image_id for r in orders[0]],
            [r.candidate.image_id for r in orders[1]],
            len(ranked),
            random.Random(seed),
        )
        names = {"a": plan.teams[0].name, "b": plan.teams[1].name}
        interleaved = [by_id[0 if side == "a" else 1][image_id] for image_id, side in merged]
        teams = {image_id: names[side] for image_id, side in merged}
        return interleaved, computed, teams, f"{labels[0]} | {labels[1]}"

    def _rerank(
        self, serving, ranked: list[Ranked], vector, text: str, depth: int, rerank_depth: int
    ) -> tuple[list[Ranked], dict] | None:
        """The top ``rerank_depth`` candidates in the learned order, the rest after them, and the feature
        rows and facts computed for them (the page reuses them); None on failure."""
        top = ranked[:rerank_depth]
        if not top:
            return ranked, {}
        try:
            if list(serving.version.feature_names) != NAMES:
                raise ValueError(f"{serving.version} was trained on other features than the registry's.")
            candidates = [r.candidate for r in top]
            matrix, facts = candidate_features(self.version, vector, candidates, query_key(text), depth)
            # One thread: a hundred rows take 0.05 ms, while waking OpenMP workers on cores busy with the text
            # towers and PostgreSQL cost 0.7-1.5 ms per search (measured in the search API profile).
            scores = serving.booster.predict(matrix, num_threads=1)
        except Exception:  # noqa: BLE001 - any failure serves the first-stage order, counted and logged
            count("rerank_fallbacks")
            FALLBACKS.labels("rerank").inc()
            logger.exception("Reranking with %s failed; serving the first-stage order.", serving.version)
            return None
        order = sorted(range(len(top)), key=lambda i: (-scores[i], top[i].candidate.first_stage_rank))
        computed = {
            c.image_id: (row, facts[c.image_id])
            for c, row in zip(candidates, matrix, strict=True)
            if c.image_id in facts
        }
        return [Ranked(top[i].candidate, float(scores[i])) for i in order] + ranked[len(top) :], computed

    def describe(self, image_id: int, *, k: int = 5) -> list[CaptionHit]:
        """Image to text: the captions of the collection that best describe this image."""
        if not 1 <= k <= 100:
            raise InvalidQuery("k must be between 1 and 100.", field="k")
        vector = self._stored_vector(image_id)
        neighbours = nearest_captions(self.version, vector, k=k)
        captions = Caption.objects.in_bulk([n.id for n in neighbours])
        return [CaptionHit(captions[n.id], n.score) for n in neighbours if n.id in captions]

    def _stored_vector(self, image_id: int):
        if not Image.objects.filter(pk=image_id).exists():
            raise UnknownImage(f"There is no image {image_id}.", field="image_id")
        row = ImageEmbedding.objects.filter(image_id=image_id, encoder_version=self.version).first()
        if row is None:
            raise NotIndexed(f"Image {image_id} has no vector for the serving encoder yet; try again shortly.")
        return row.vector

    @staticmethod
    def _cut(neighbours: list[Neighbour], request: SearchRequest, plan: ServingPlan) -> list[Neighbour]:
        """The request's thresholds, else the serving configuration's, else the settings'."""
        min_score = next(v for v in (request.min_score, plan.min_score, settings.LOUPE_MIN_SCORE) if v is not None)
        drop = next(
            v
            for v in (request.max_relative_drop, plan.max_relative_drop, settings.LOUPE_MAX_RELATIVE_DROP)
            if v is not None
        )
        keep = cut_length([n.score for n in neighbours], min_score=min_score, max_relative_drop=drop)
        return neighbours[:keep]

    @staticmethod
    def _load_images(ids: list[int]) -> dict[int, Image]:
        # One query with the captions as an array (a prefetch measured ~2 ms a page), and recently shown
        # images from memory.
        return page_images(ids, Image.with_caption_texts)
