"""Page and log: the response a search returns, with its stage timings, and what the search log keeps of it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from collection.versions import EncoderInfo
from feedback.impressions import ServedList, ShownResult
from ranking.features import NAMES
from searchapp.pipeline.page import SearchHit


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
    filters: str = ""  # the metadata filters, in the query syntax
    sort: str = "relevance"
    timings_ms: dict[str, float] = field(default_factory=dict)
    channel_weights: dict[str, float] = field(default_factory=dict)
    ranker: str = "embedding"
    experiment_id: int | None = None
    arm: str = ""
    event_id: uuid.UUID | None = None  # the logged SearchEvent that clicks and ratings refer to
    swap_position: int | None = None  # the upper position of the pair swapped on purpose (the propensity slice)
    swap_with: int | None = None  # its lower position (k + 1, or k + d for a grid pair)
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
class StageTimes:
    """``time.perf_counter()`` when each stage ended; a cached order's lookup counts as retrieval."""

    started: float
    encoded: float
    retrieved: float
    ranked: float
    paged: float

    def as_ms(self) -> dict[str, float]:
        return {
            "encode": round((self.encoded - self.started) * 1000, 2),
            "retrieve": round((self.retrieved - self.encoded) * 1000, 2),
            "rank": round((self.ranked - self.retrieved) * 1000, 2),
            "page": round((self.paged - self.ranked) * 1000, 2),
            "total": round((self.paged - self.started) * 1000, 2),
        }


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
        swap_with=response.swap_with,
        explore_position=response.explore_position,
        explore_from=response.explore_from,
    )
