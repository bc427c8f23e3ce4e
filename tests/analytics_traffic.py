"""Seeded search traffic for the analytics tests, and the same figures counted straight from the log.

The direct counts use the ORM over ``SearchEvent``/``Click``/``Rating`` rows, independently of the
fold's SQL, so a test comparing the two catches a fold (or a page) that counts wrong.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from django.db.models import Q

from collection.images import read_image
from collection.ingestion.service import add_image
from collection.models import EncoderVersion
from feedback.analytics.latency import bucket_midpoint, bucket_of
from feedback.api_keys import issue_key
from feedback.models import ApiKey, Click, Impression, Rating, SearchEvent
from tests.conftest import image_bytes

QUERIES = ["red bicycle", "sunset beach", "old map", "cat on sofa", "zzz nothing here"]
RANKS = ["clip_rank_log", "fts_rank_log", "caption_rank_log"]
# web page, public API (no key), partner API (a key)
SURFACE_FILTERS = {
    "page": Q(surface="web"),
    "api": Q(surface="api", partner__isnull=True),
    "partner": Q(surface="api", partner__isnull=False),
    "": Q(),
}


def traffic_images(count: int = 4) -> list:
    return [add_image(read_image(image_bytes(seed)))[0] for seed in range(count)]


def encoder_version() -> EncoderVersion:
    return EncoderVersion.objects.get_or_create(
        model_ref="tests/analytics", fingerprint="0" * 64, defaults={"name": "analytics test", "dimension": 8}
    )[0]


def log_search(
    at: datetime,
    *,
    images: list,
    user: str,
    query: str = "red bicycle",
    surface: str = "web",
    partner: ApiKey | None = None,
    results: int = 3,
    latency_ms: float | None = 40.0,
    page: int = 1,
    click: int | None = None,
    rating: int | None = None,
    explore: bool = False,
    swap: bool = False,
    best_channel: int = 0,
) -> SearchEvent:
    """One logged search at ``at``; ``click`` is the clicked position, ``rating`` a stars value on position 1."""
    event = SearchEvent.objects.create(
        user_key=user,
        surface=surface,
        partner=partner,
        kind="text",
        query_text=query,
        normalised_query=query,
        page=page,
        page_size=3,
        encoder_version=encoder_version(),
        feature_names=RANKS,
        result_count=results,
        latency_ms=latency_ms,
        explore_position=2 if explore else None,
        swap_position=1 if swap else None,
    )
    SearchEvent.objects.filter(pk=event.pk).update(created_at=at)
    for position, image in enumerate(images[:results], start=1):
        ranks = [3.0, 3.0, 3.0]
        ranks[best_channel] = 1.0
        Impression.objects.create(event=event, image=image, position=position, score=1.0, features=ranks)
    if click is not None:
        Click.objects.create(
            event=event, image=images[click - 1], position=click, user_key=user, client_id=f"c-{event.pk}"
        )
    if rating is not None:
        Rating.objects.create(
            user_key=user, image=images[0], event=event, scale="stars", value=rating, client_id=f"r-{event.pk}"
        )
    event.refresh_from_db()
    return event


def seed_traffic(start: datetime, searches: int = 80, seed: int = 7) -> list[SearchEvent]:
    """``searches`` logged searches over two days from ``start`` on three surfaces, with clicks, ratings,
    empty result lists, later pages, slices and every channel."""
    rng = random.Random(seed)
    images = traffic_images()
    partner = issue_key("analytics partner", ["search"]).api_key
    events = []
    for n in range(searches):
        at = start + timedelta(hours=rng.choice([0, 1, 3, 25, 26]), minutes=rng.randrange(60))
        surface = rng.choice(["page", "page", "api", "partner"])
        query = rng.choice(QUERIES)
        results = 0 if query == QUERIES[-1] else 3
        events.append(
            log_search(
                at,
                images=images,
                user=f"anon:{surface}-user-{rng.randrange(12)}",
                query=query,
                surface="web" if surface == "page" else "api",
                partner=partner if surface == "partner" else None,
                results=results,
                latency_ms=rng.choice([None, rng.uniform(5, 400)]),
                page=2 if n % 11 == 10 else 1,
                click=rng.choice([None, 1, 2]) if results and query != "old map" else None,
                rating=rng.choice([None, None, 4, 5]) if results else None,
                explore=n % 7 == 0,
                swap=n % 9 == 0,
                best_channel=rng.randrange(3),
            )
        )
    return events


def direct_counts(since: datetime, until: datetime, surface: str = "") -> dict:
    """The page's headline figures counted from the log itself."""
    searches = SearchEvent.objects.filter(SURFACE_FILTERS[surface], page=1, created_at__gte=since, created_at__lt=until)
    clicked = searches.filter(clicks__isnull=False).distinct()
    rated = searches.filter(ratings__isnull=False).distinct()
    ratings = Rating.objects.filter(event__in=searches)
    latencies = sorted(searches.exclude(latency_ms=None).values_list("latency_ms", flat=True))
    n = searches.count()
    return {
        "searches": n,
        "users": searches.values("user_key").distinct().count(),
        "clicked_searches": clicked.count(),
        "clicks": Click.objects.filter(event__in=searches).count(),
        "abandoned": searches.exclude(pk__in=clicked).exclude(pk__in=rated).count(),
        "no_results": searches.filter(result_count=0).count(),
        "ratings": ratings.count(),
        "mean_rating": sum(r.utility for r in ratings) / ratings.count() if ratings.exists() else None,
        "explored": searches.exclude(explore_position=None).count(),
        "swapped": searches.exclude(swap_position=None).count(),
        "click_through_rate": clicked.count() / n if n else None,
        # nearest-rank percentiles, read back as their histogram bucket (feedback.analytics.latency)
        "p50_ms": bucket_midpoint(bucket_of(latencies[max(1, -(-len(latencies) // 2)) - 1])) if latencies else None,
    }
