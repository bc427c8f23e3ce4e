"""Fitting fusion weights on labelled queries: the grid, the choice, and the served fusion's equal."""

import random

import numpy as np
import pytest

from collection.fusion import CONVEX, MAX, NORMALISATIONS, RRF
from ranking.metrics import reciprocal_rank
from searchapp.fusion_fit import (
    LabelledQuery,
    counted,
    fit_convex,
    fit_weights,
    fused_ids,
    prepare,
    prepared_reciprocal_rank,
    weight_grid,
)


def query(relevant: int, clip, fts, group=0) -> LabelledQuery:
    ids = {i for i, _ in clip} | {i for i, _ in fts}
    return LabelledQuery(
        text=f"q{relevant}",
        relevant=frozenset({relevant}),
        rankings={"clip": clip, "fts": fts},
        has_document=dict.fromkeys(ids, True),
        has_captions=dict.fromkeys(ids, True),
        group=group,
        own_weights={"clip": 1.0, "fts": 1.0},
    )


def test_the_grid_covers_the_simplex():
    grid = weight_grid(["clip", "fts", "caption"], 0.1)
    assert len(grid) == 66
    assert all(sum(w.values()) == pytest.approx(1.0) for w in grid)
    assert {"clip": 1.0, "fts": 0.0, "caption": 0.0} in grid


def test_the_fit_weighs_the_channel_that_finds_the_answers():
    # Full text puts the right image first every time, CLIP second: the fit must lean on full text.
    queries = [query(i, clip=[(i + 100, 0.9), (i, 0.1)], fts=[(i, 3.0), (i + 100, 2.9)]) for i in range(5)]
    fit = fit_weights(queries, CONVEX, ["clip", "fts"])
    assert fit.mrr == 1.0 and fit.weights["fts"] > fit.weights["clip"]
    flipped = [query(i, clip=[(i, 0.9), (i + 100, 0.1)], fts=[(i + 100, 3.0), (i, 2.9)]) for i in range(5)]
    refit = fit_weights(flipped, CONVEX, ["clip", "fts"])  # an even tie breaks by CLIP's order: enough here
    assert refit.mrr == 1.0 and refit.weights["clip"] >= refit.weights["fts"]


def test_ties_go_to_the_more_even_weights():
    # Both channels agree: every weighting scores MRR 1, and the fit keeps them even.
    queries = [query(i, clip=[(i, 0.9), (i + 100, 0.1)], fts=[(i, 3.0), (i + 100, 1.0)]) for i in range(3)]
    assert fit_weights(queries, RRF, ["clip", "fts"]).weights == {"clip": 0.5, "fts": 0.5}


def test_a_query_with_clip_alone_keeps_clips_order():
    only_clip = LabelledQuery("q", frozenset({2}), {"clip": [(3, 0.9), (2, 0.5)]}, {}, {})
    assert fused_ids(only_clip, CONVEX, {"clip": 0.0, "fts": 1.0}) == [3, 2]


def random_query(rng: random.Random, channels, *, candidates: bool = False, group: int = 0) -> LabelledQuery:
    """Random lists with overlaps, ties, and images the text channels cannot see."""
    rankings = {c: [(i, round(rng.random(), 1)) for i in rng.sample(range(30), rng.randint(0, 12))] for c in channels}
    for c in channels:
        rankings[c].sort(key=lambda pair: -pair[1])
    ids = {i for ranking in rankings.values() for i, _ in ranking}
    relevant = rng.choice(sorted(ids)) if ids else 0
    return LabelledQuery(
        f"q{rng.random()}",
        frozenset({relevant}),
        rankings,
        has_document={i: rng.random() < 0.7 for i in ids},
        has_captions={i: rng.random() < 0.7 for i in ids},
        group=group,
        # Tag queries rank only some images (a rotation's held-out ones); the relevant one is always among them.
        candidates=frozenset({relevant, *rng.sample(sorted(ids), len(ids) // 2)}) if candidates and ids else None,
    )


@pytest.mark.parametrize(
    ("method", "normalisation"), [(RRF, MAX), *((CONVEX, name) for name in NORMALISATIONS)], ids=lambda v: str(v)
)
def test_the_fast_fit_scores_every_weighting_as_the_served_fusion_does(method, normalisation):
    rng = random.Random(7)
    channels = ["clip", "fts", "caption"]
    for trial in range(40):
        labelled = random_query(rng, channels, candidates=trial % 2 == 1)
        prepared = prepare(labelled, method, channels, normalisation)
        for weights in weight_grid(channels, 0.25):
            served = counted(labelled, fused_ids(labelled, method, weights, normalisation))
            exact = reciprocal_rank(served, labelled.relevant)
            fast = prepared_reciprocal_rank(prepared, np.array([weights[c] for c in channels]))
            assert fast == pytest.approx(exact), (trial, weights)


def test_convex_fitting_chooses_the_normalisation_with_the_weights():
    rng = random.Random(11)
    channels = ["clip", "fts"]
    queries = [random_query(rng, channels) for _ in range(30)]
    fit = fit_convex(queries, channels, step=0.25)
    each = {name: fit_weights(queries, CONVEX, channels, 0.25, name) for name in NORMALISATIONS}
    assert fit.mrr == max(f.mrr for f in each.values())
    assert fit.normalisation == next(name for name, f in each.items() if round(f.mrr, 9) == round(fit.mrr, 9))
    assert fit.weights == each[fit.normalisation].weights


def test_each_rotation_is_scored_with_the_normalisation_fitted_on_the_other_rotations():
    from searchapp.evaluation import cross_fitted

    rng = random.Random(3)
    channels = ["clip", "fts"]
    first = random_query(rng, channels, group=0)
    chosen = fit_convex([first], channels).normalisation
    for _ in range(500):  # a second query whose own best normalisation differs from the first's
        second = random_query(rng, channels, group=1)
        if fit_convex([second], channels).normalisation != chosen:
            break
    other = fit_convex([second], channels).normalisation
    assert other != chosen
    result = cross_fitted([first, second], (1, 5, 10), 10, channels)
    assert result["normalisations"] == {0: other, 1: chosen}  # each rotation's chosen on the other one only
