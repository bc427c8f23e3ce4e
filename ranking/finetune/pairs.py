"""Training pairs for the encoder from feedback: (query, image users chose), weighted, with skipped negatives.

A click says less than it seems: the result at position 1 is examined nearly always, the one at 30
rarely, and some clicks land on results that were not what the user wanted. So a pair is judged by
all of its impressions at once. Over the searches of a window, each (normalised query, image) pair
has ``clicks`` and ``examinations`` = the sum of propensity(position) over the times it was shown;
clicks / examinations is the inverse-propensity estimate of its click probability once examined
(Joachims, Swaminathan & Schnabel, WSDM 2017). It is smoothed by a Beta prior (``prior_mean``,
``prior_strength`` pseudo-examinations), so one click on a rarely examined image is not taken for
certainty, and a pair is kept when the estimate reaches ``min_relevance``, weighted by it (at most 1).
With the defaults one click on a result seen once is kept ((1 + 0.1) / (1 + 2) = 0.37 at position 1),
but the same single click after five searches showed it at the top is not (1.1 / 7 = 0.16): a result
chosen 30% of the times it is examined passes, a stray-click rate of 5% does not.
On the shared Caltech simulation this is what separates choices from noise: with a weak base encoder
most clicked pairs are stray clicks, and counting each click as a pair trained on them.

A click whose dwell time is known and shorter than ``short_click_ms`` (the user came straight back:
the "short click" of web search, Fox et al., TOIS 2005) counts as an examination, not a choice. Where
the weak base shows mostly irrelevant images, that is what keeps stray clicks out: a single click is
otherwise a coin flip between a choice and a stray (docs/finetuning.md measures it). Clicks whose
dwell never arrived count as choices.

A good rating (utility >= 0.75) with a query keeps its pair at weight 1; a bad one (<= 0.25) removes
it. The images shown above a click and not chosen are kept as that pair's hard negatives.

Windows are cut by search time: the latest ``held_out_share`` of searches are held out, the first half
of them to choose epochs and the WiSE-FT mix (validation), the second half for the gate (test), so the
gate's numbers come from searches nothing was chosen on. Time alone does not make the pairs differ: the
same (query, image) chosen again in a later window is the pair training or early stopping already saw
(in the fine-tune test, every held-out round repeated the validation pairs). So a later window keeps
only pairs that no earlier window holds (``PairWindows.dropped`` counts the others), and
``assert_disjoint`` raises ``WindowOverlap`` before anything trains if one slipped through.
Queries may repeat (the head of real traffic); ``PairWindows.test_queries_in_training`` says how many do.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection
from django.db.models import Count, Q

from collection.takedown import kept_image_sql, kept_images
from feedback.erasure import exclude_erased, not_erased_sql
from feedback.models import Click, Impression, Rating, SearchEvent
from ranking.propensity import PropensityCurve

# Table names from the models that own them, so a rename breaks a test rather than production.
CLICK_TABLE = Click._meta.db_table
EVENT_TABLE = SearchEvent._meta.db_table
IMPRESSION_TABLE = Impression._meta.db_table

GOOD_RATING, BAD_RATING = 0.75, 0.25


@dataclass(frozen=True)
class RelevanceSettings:
    prior_mean: float = 0.05  # the click rate of an examined result before any evidence: most are not chosen
    prior_strength: float = 2.0  # in examinations: how much evidence it takes to move far from the prior
    min_relevance: float = 0.2  # keep pairs chosen at least this often once examined
    short_click_ms: int = 5000  # a click followed by a return sooner than this was not a choice (0: off)


@dataclass
class Pair:
    query: str
    image_id: int
    weight: float  # the smoothed relevance estimate (<= 1); 1 for a well-rated pair
    clicks: int = 0
    examinations: float = 0.0
    skipped: set[int] = field(default_factory=set)


@dataclass
class PairWindows:
    train: list[Pair]
    validation: list[Pair]
    test: list[Pair]
    boundaries: tuple[datetime | None, datetime | None, datetime]  # validation from, test from, until
    dropped: dict[str, int] = field(default_factory=dict)  # window -> pairs left out: an earlier window holds them

    @property
    def test_queries_in_training(self) -> int:
        """Test queries that training also saw (with other images): the gate is not only about new queries."""
        return len({p.query for p in self.test} & {p.query for p in self.train})


class WindowOverlap(ValueError):
    """A (query, image) pair in two windows: the set that trains or chooses would also be the one that judges."""


def assert_disjoint(windows: PairWindows) -> None:
    """Raise ``WindowOverlap`` if any (query, image) pair is in more than one of the three windows."""
    named = {"training": windows.train, "validation": windows.validation, "test": windows.test}
    keys = {name: {(p.query, p.image_id) for p in pairs} for name, pairs in named.items()}
    for first, second in (("training", "validation"), ("training", "test"), ("validation", "test")):
        shared = sorted(keys[first] & keys[second])
        if shared:
            query, image_id = shared[0]
            raise WindowOverlap(
                f"{len(shared)} pair(s) in both the {first} and the {second} window, e.g. ({query!r}, image "
                f"{image_id}): the {second} figures would not be held out."
            )


def _new_pairs(pairs: list[Pair], earlier: list[Pair]) -> tuple[list[Pair], int]:
    """The pairs no earlier window holds, and how many were left out."""
    seen = {(p.query, p.image_id) for p in earlier}
    kept = [p for p in pairs if (p.query, p.image_id) not in seen]
    return kept, len(pairs) - len(kept)


def smoothed_relevance(clicks: float, examinations: float, options: RelevanceSettings) -> float:
    return (clicks + options.prior_mean * options.prior_strength) / (examinations + options.prior_strength)


def _examinations(since: datetime | None, until: datetime, curve: PropensityCurve) -> dict[tuple[str, int], float]:
    """Sum of propensity(position) over every impression of every text search in the window, per pair."""
    values = [float(v) for v in curve.values]
    sql = f"""
        SELECT e.normalised_query, i.image_id, SUM((%s::float8[])[LEAST(i.position, %s)])
        FROM {IMPRESSION_TABLE} i JOIN {EVENT_TABLE} e ON e.id = i.event_id
        WHERE e.kind = 'text' AND e.normalised_query <> '' AND e.created_at < %s AND {not_erased_sql("e")}
              AND {kept_image_sql("i.image_id")} AND (%s::timestamptz IS NULL OR e.created_at >= %s)
        GROUP BY 1, 2
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [values, len(values), until, since, since])
        return {(q, image): float(total) for q, image, total in cursor.fetchall()}


def _clicks(since: datetime | None, until: datetime, short_click_ms: int) -> list[tuple]:
    """(event id, query, image, position) of each click on a text search in the window that was not a short click."""
    sql = f"""
        SELECT c.event_id, e.normalised_query, c.image_id, c.position
        FROM {CLICK_TABLE} c JOIN {EVENT_TABLE} e ON e.id = c.event_id
        WHERE e.kind = 'text' AND e.normalised_query <> '' AND e.created_at < %s AND {not_erased_sql("e")}
              AND {kept_image_sql("c.image_id")} AND (%s::timestamptz IS NULL OR e.created_at >= %s)
              AND (c.dwell_ms IS NULL OR c.dwell_ms >= %s)
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [until, since, since, short_click_ms])
        return cursor.fetchall()


def _shown_above(clicks: list[tuple]) -> dict:
    """event id -> [(position, image)] for the events that have clicks."""
    events = sorted({row[0] for row in clicks})
    shown: dict = defaultdict(list)
    with connection.cursor() as cursor:
        for start in range(0, len(events), 5000):
            cursor.execute(
                f"SELECT event_id, position, image_id FROM {IMPRESSION_TABLE} "
                f"WHERE event_id = ANY(%s) AND {kept_image_sql('image_id')}",
                [events[start : start + 5000]],
            )
            for event_id, position, image_id in cursor.fetchall():
                shown[event_id].append((position, image_id))
    return shown


def feedback_pairs(
    since: datetime | None, until: datetime, propensity: PropensityCurve, options: RelevanceSettings | None = None
) -> list[Pair]:
    """The pairs users chose in searches made in [since, until), by query then image."""
    options = options or RelevanceSettings()
    clicks = _clicks(since, until, options.short_click_ms)
    examined = _examinations(since, until, propensity)
    counts: dict[tuple[str, int], int] = defaultdict(int)
    clicked_by_event: dict = defaultdict(set)
    for event_id, query, image_id, _ in clicks:
        counts[(query, image_id)] += 1
        clicked_by_event[event_id].add(image_id)
    pairs: dict[tuple[str, int], Pair] = {}
    for key, n in counts.items():
        exams = examined.get(key, 0.0)
        relevance = smoothed_relevance(n, exams, options)
        if relevance >= options.min_relevance:
            pairs[key] = Pair(key[0], key[1], min(relevance, 1.0), n, exams)
    for key, utility in _ratings(since, until).items():
        if utility >= GOOD_RATING:
            pair = pairs.setdefault(key, Pair(key[0], key[1], 1.0, 0, examined.get(key, 0.0)))
            pair.weight = 1.0
        elif utility <= BAD_RATING:
            pairs.pop(key, None)  # the user said it is not what they wanted
    shown = _shown_above(clicks)
    positives: dict[str, set[int]] = defaultdict(set)
    for query, image_id in pairs:
        positives[query].add(image_id)
    for event_id, query, image_id, position in clicks:
        pair = pairs.get((query, image_id))
        if pair is not None:
            pair.skipped |= {
                i
                for p, i in shown[event_id]
                if p < position and i not in clicked_by_event[event_id] and i not in positives[query]
            }
    return [pairs[key] for key in sorted(pairs)]


def _ratings(since: datetime | None, until: datetime) -> dict[tuple[str, int], float]:
    """(query, image) -> the latest rating's utility, for ratings with a query, dated by their search."""
    with_event = Q(event__isnull=False, event__created_at__lt=until)
    without = Q(event__isnull=True, created_at__lt=until)
    if since is not None:
        with_event &= Q(event__created_at__gte=since)
        without &= Q(created_at__gte=since)
    found: dict[tuple[str, int], float] = {}
    # An erased user's ratings and a taken-down image's are fenced off.
    rated = kept_images(exclude_erased(Rating.objects.filter(with_event | without)))
    for rating in rated.select_related("event").order_by("created_at"):
        query = rating.event.normalised_query if rating.event_id else " ".join(rating.query_text.lower().split())
        if query:
            found[(query, rating.image_id)] = rating.utility
    return found


def search_time_quantiles(until: datetime, shares: list[float]) -> list[datetime | None]:
    """Times below which the given shares of the text searches before ``until`` fall."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT percentile_disc(%s::float8[]) WITHIN GROUP (ORDER BY created_at) FROM {EVENT_TABLE} "
            "WHERE kind = 'text' AND normalised_query <> '' AND created_at < %s",
            [shares, until],
        )
        found = cursor.fetchone()[0]
    return list(found) if found else [None] * len(shares)


def served_by(boundaries: tuple[datetime | None, datetime | None, datetime]) -> dict[str, dict[str, int]]:
    """Per window, how many of its text searches each encoder version served ("v<id>").

    The pairs of a window can only hold images the serving version showed, so a window served by the
    version being tuned favours it, and one served by another version favours that one (issue 17,
    finding 2): the gate's figures are read with this beside them.
    """
    validation_from, test_from, until = boundaries
    windows = {"training": (None, validation_from or until), "validation": (validation_from, test_from)}
    windows["test"] = (test_from, until)
    found: dict[str, dict[str, int]] = {}
    for name, (since, before) in windows.items():
        if before is None or (name != "training" and since is None):
            found[name] = {}
            continue
        searches = SearchEvent.objects.filter(kind="text", created_at__lt=before).exclude(normalised_query="")
        if since is not None:
            searches = searches.filter(created_at__gte=since)
        counts = searches.values_list("encoder_version_id").annotate(n=Count("id")).order_by("encoder_version_id")
        found[name] = {f"v{version}": n for version, n in counts}
    return found


def windowed_pairs(
    until: datetime, propensity: PropensityCurve, options: RelevanceSettings | None = None, held_out_share: float = 0.25
) -> PairWindows:
    """Train on the earlier searches; validation and test pairs each from half of the latest ``held_out_share``,
    each without the pairs an earlier window holds."""
    validation_from, test_from = search_time_quantiles(until, [1 - held_out_share, 1 - held_out_share / 2])
    if validation_from is None or test_from is None or validation_from >= test_from:
        return PairWindows(feedback_pairs(None, until, propensity, options), [], [], (None, None, until))
    train = feedback_pairs(None, validation_from, propensity, options)
    validation, dropped_validation = _new_pairs(feedback_pairs(validation_from, test_from, propensity, options), train)
    test, dropped_test = _new_pairs(feedback_pairs(test_from, until, propensity, options), train + validation)
    windows = PairWindows(
        train,
        validation,
        test,
        (validation_from, test_from, until),
        {"validation": dropped_validation, "test": dropped_test},
    )
    assert_disjoint(windows)
    return windows
