"""The query sets of the learning simulation: training traffic and three held-out sets, disjoint by construction.

A ranker trained on click logs can gain in two ways: by remembering what users clicked for a query
it has seen (``query_ctr`` and ``query_impressions_log`` join on the exact normalised
string), and by generalising (image priors, the first stage's score and ranks). The first is real
value on the head of traffic, but says nothing about queries nobody typed before. So every
measurement reports three sets separately (issue 17: the earlier "held-out" queries were drawn from
the training strings, and the x3-14 gains were all of the first kind):

- ``repeat``: strings drawn from the training traffic itself (memorising is legitimate here);
- ``new_phrasings``: seen intents (a Caltech class, a coco image that has training traffic) in
  wordings never used in training traffic (other templates; another held-out caption);
- ``new_intents``: intents with no training traffic at all (classes, or coco images, left out).

``check_held_out`` asserts the disjointness before the run, and ``check_logs`` asserts it against
what was actually logged before every measurement: a held-out string in the logs stops the run.
Pure: no Django, so the unit test runs without a database.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

TRAINING_PHRASINGS = ("a photo of a {}", "{}", "a picture of the {}")
# Wordings no training search uses: the "new phrasings" of a seen class.
NEW_PHRASINGS = ("an image of a {}", "{} shown in a snapshot", "a close-up of the {}")
SETS = ("repeat", "new_phrasings", "new_intents")


class LeakageError(RuntimeError):
    """A held-out query string, intent or caption is in the training data: the measurement would not be held out."""


@dataclass(frozen=True)
class Query:
    text: str
    intent: str  # what the user wants: a Caltech class, or one coco image ("image-<id>")


@dataclass(frozen=True)
class QuerySets:
    """Training traffic (with its Zipf weights, head first) and the three held-out samples."""

    training: tuple[Query, ...]
    weights: np.ndarray
    held_out: dict[str, tuple[Query, ...]]
    new_intents: frozenset[str]  # intents that must never appear in training traffic

    def draw_training(self, rng: np.random.Generator) -> Query:
        return self.training[int(rng.choice(len(self.training), p=self.weights))]


def normalised(text: str) -> str:
    """The form the product counts a query under (``feedback.impressions.query_key``)."""
    return " ".join(text.lower().split())[:500]


def zipf_weights(n: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return weights / weights.sum()


def caltech_sets(
    classes: Sequence[str], *, seed: int, per_set: int, zipf: float, new_intent_share: float = 0.2
) -> QuerySets:
    """Classes split into seen and left-out; seen classes searched with ``TRAINING_PHRASINGS`` only."""
    rng = np.random.default_rng(seed)
    classes = sorted(set(classes))
    left_out = set(rng.choice(classes, size=max(1, round(len(classes) * new_intent_share)), replace=False).tolist())
    training = [Query(p.format(c), c) for c in classes if c not in left_out for p in TRAINING_PHRASINGS]
    training = [training[i] for i in rng.permutation(len(training))]
    weights = zipf_weights(len(training), zipf)
    draws = np.random.default_rng(10_000 + seed)  # the held-out samples' own stream
    repeat = [training[int(i)] for i in draws.choice(len(training), size=per_set, p=weights)]
    # A seen intent as often as traffic asks for it, in a wording training never used.
    intents = [training[int(i)].intent for i in draws.choice(len(training), size=per_set, p=weights)]
    phrasings = [Query(NEW_PHRASINGS[int(draws.integers(len(NEW_PHRASINGS)))].format(c), c) for c in intents]
    unseen = sorted(left_out)
    every_template = TRAINING_PHRASINGS + NEW_PHRASINGS
    fresh = [
        Query(every_template[int(draws.integers(len(every_template)))].format(c), c)
        for c in (unseen[int(i)] for i in draws.integers(len(unseen), size=per_set))
    ]
    sets = QuerySets(
        tuple(training),
        weights,
        {"repeat": tuple(repeat), "new_phrasings": tuple(phrasings), "new_intents": tuple(fresh)},
        frozenset(left_out),
    )
    check_held_out(sets)
    return sets


def coco_sets(
    captions: dict[str, Sequence[str]], *, seed: int, per_set: int, zipf: float, new_intent_share: float = 0.2
) -> tuple[QuerySets, dict[str, list[str]]]:
    """Per image (intent), the last caption is its training query and the one before it its new phrasing.

    Returns the sets and the captions the collection may ingest (all but those two); images left
    out as new intents have no training query, and their last caption is their held-out query.
    """
    rng = np.random.default_rng(seed)
    intents = sorted(i for i, texts in captions.items() if len(texts) >= 3)
    left_out = set(rng.choice(intents, size=max(1, round(len(intents) * new_intent_share)), replace=False).tolist())
    ingest = {i: list(captions[i][:-2]) for i in intents}
    training = [Query(captions[i][-1], i) for i in intents if i not in left_out]
    training = [training[k] for k in rng.permutation(len(training))]
    weights = zipf_weights(len(training), zipf)
    draws = np.random.default_rng(10_000 + seed)
    repeat = [training[int(k)] for k in draws.choice(len(training), size=per_set, p=weights)]
    seen = [training[int(k)].intent for k in draws.choice(len(training), size=per_set, p=weights)]
    phrasings = [Query(captions[i][-2], i) for i in seen]
    unseen = sorted(left_out)
    fresh = [Query(captions[unseen[int(k)]][-1], unseen[int(k)]) for k in draws.integers(len(unseen), size=per_set)]
    sets = QuerySets(
        tuple(training),
        weights,
        {"repeat": tuple(repeat), "new_phrasings": tuple(phrasings), "new_intents": tuple(fresh)},
        frozenset(left_out),
    )
    check_held_out(sets, collection_texts=[t for texts in ingest.values() for t in texts])
    return sets, ingest


def check_held_out(sets: QuerySets, collection_texts: Iterable[str] = ()) -> None:
    """Raise ``LeakageError`` unless the held-out sets are what their names say.

    repeat: every string is a training string. new_phrasings: no string is a training string (or a
    caption in the collection), every intent has training traffic. new_intents: no string is a
    training string or a collection caption, no intent has any training traffic.
    """
    trained = {normalised(q.text) for q in sets.training}
    trained_intents = {q.intent for q in sets.training}
    in_collection = {normalised(t) for t in collection_texts}
    if missing := [q.text for q in sets.held_out["repeat"] if normalised(q.text) not in trained]:
        raise LeakageError(f"repeat queries that are not training strings: {missing[:3]}")
    for name in ("new_phrasings", "new_intents"):
        queries = sets.held_out[name]
        if seen := [q.text for q in queries if normalised(q.text) in trained]:
            raise LeakageError(f"{name}: held-out query strings in the training traffic: {seen[:3]}")
        if seen := [q.text for q in queries if normalised(q.text) in in_collection]:
            raise LeakageError(f"{name}: held-out query strings among the collection's captions: {seen[:3]}")
    if unseen := [q.intent for q in sets.held_out["new_phrasings"] if q.intent not in trained_intents]:
        raise LeakageError(f"new phrasings of intents with no training traffic: {unseen[:3]}")
    if leaked := sorted(sets.new_intents & trained_intents):
        raise LeakageError(f"new intents with training traffic: {leaked[:3]}")
    if leaked := [q.intent for q in sets.held_out["new_intents"] if q.intent not in sets.new_intents]:
        raise LeakageError(f"new-intent queries for intents that are not left out: {leaked[:3]}")


def check_logs(sets: QuerySets, logged_queries: Iterable[str]) -> None:
    """Raise ``LeakageError`` if a new-phrasing or new-intent string was logged (trained on) by the product."""
    held_out = {normalised(q.text) for name in ("new_phrasings", "new_intents") for q in sets.held_out[name]}
    if leaked := sorted(held_out.intersection(normalised(q) for q in logged_queries)):
        raise LeakageError(f"held-out query strings in the search logs: {leaked[:3]}")


def new_phrasing_traffic(sets: QuerySets) -> QuerySets:
    """Traffic for experiments that compare a ranker trained on ``sets.training``: the same intents, as
    popular as in training, asked only in ``NEW_PHRASINGS`` (no string of it is a training string).

    An experiment whose users typed the ranker's training strings would measure what the ranker
    remembered about those strings (``query_ctr``), not what a ranker trained on yesterday's traffic
    does for today's; the held-out sets stay empty (nothing here is measured offline).
    """
    queries, weights = [], []
    for query, weight in zip(sets.training, sets.weights, strict=True):
        template = next(i for i, t in enumerate(TRAINING_PHRASINGS) if t.format(query.intent) == query.text)
        # Each training string maps to one new wording of its intent, so the intents keep their weights.
        queries.append(Query(NEW_PHRASINGS[template].format(query.intent), query.intent))
        weights.append(weight)
    traffic = QuerySets(tuple(queries), np.asarray(weights), {}, frozenset())
    check_traffic(traffic, [q.text for q in sets.training])
    return traffic


def check_traffic(
    traffic: QuerySets, trained_queries: Iterable[str], where: str = "the ranker's training searches"
) -> None:
    """Raise ``LeakageError`` if a query string of the evaluated ``traffic`` is among ``trained_queries``
    (the ranker's training searches, or the query summaries its features read: ``where`` says which)."""
    evaluated = {normalised(q.text) for q in traffic.training}
    if leaked := sorted(evaluated.intersection(normalised(q) for q in trained_queries)):
        raise LeakageError(f"evaluated query strings in {where}: {leaked[:3]}")
