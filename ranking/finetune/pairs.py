"""Training pairs for the encoder from feedback: (query, chosen image), weighted, with skipped images as negatives.

A click at position p is a choice seen with probability propensity(p), so it counts 1/propensity(p)
(clipped at 20; the same curve as the ranker's). A good rating (utility >= 0.75) with a query counts 1.
Pairs are de-duplicated by (normalised query, image): weights add up (capped), the skipped images
(shown above the click, not clicked) are pooled. The split is by time: pairs first chosen in the last
``held_out_share`` of the window are held out, so the gate measures the future, not the past.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from feedback.models import Click, Impression, Rating
from ranking.propensity import PropensityCurve

GOOD_RATING = 0.75
WEIGHT_CLIP, PAIR_WEIGHT_CAP = 20.0, 50.0


@dataclass
class Pair:
    query: str
    image_id: int
    weight: float
    first_at: datetime
    skipped: set[int] = field(default_factory=set)


def feedback_pairs(until: datetime, propensity: PropensityCurve) -> list[Pair]:
    """Every (query, chosen image) pair up to ``until``, oldest first."""
    pairs: dict[tuple[str, int], Pair] = {}

    def add(query: str, image_id: int, weight: float, at: datetime, skipped: set[int]) -> None:
        key = (query, image_id)
        pair = pairs.get(key)
        if pair is None:
            pairs[key] = Pair(query, image_id, min(weight, PAIR_WEIGHT_CAP), at, set(skipped))
            return
        pair.weight = min(pair.weight + weight, PAIR_WEIGHT_CAP)
        pair.first_at = min(pair.first_at, at)
        pair.skipped |= skipped

    clicks = list(
        Click.objects.filter(created_at__lt=until, event__kind="text")
        .exclude(event__normalised_query="")
        .values_list("event_id", "event__normalised_query", "image_id", "position", "created_at")
    )
    clicked_by_event: dict = defaultdict(set)
    for event_id, _, image_id, _, _ in clicks:
        clicked_by_event[event_id].add(image_id)
    shown: dict = defaultdict(list)
    for event_id, image_id, position in Impression.objects.filter(event_id__in=list(clicked_by_event)).values_list(
        "event_id", "image_id", "position"
    ):
        shown[event_id].append((position, image_id))
    for event_id, query, image_id, position, at in clicks:
        skipped = {i for p, i in shown[event_id] if p < position and i not in clicked_by_event[event_id]}
        add(query, image_id, min(1.0 / max(propensity.at(position), 1e-9), WEIGHT_CLIP), at, skipped)
    ratings = Rating.objects.filter(created_at__lt=until).select_related("event")
    for rating in ratings:
        query = rating.event.normalised_query if rating.event_id else " ".join(rating.query_text.lower().split())
        if query and rating.utility >= GOOD_RATING:
            add(query, rating.image_id, 1.0, rating.created_at, set())
    return sorted(pairs.values(), key=lambda p: p.first_at)


def split_by_time(pairs: list[Pair], held_out_share: float = 0.2) -> tuple[list[Pair], list[Pair]]:
    """(train, held out): the pairs first chosen last are held out."""
    cut = len(pairs) - max(1, int(round(len(pairs) * held_out_share))) if len(pairs) > 1 else len(pairs)
    return pairs[:cut], pairs[cut:]
