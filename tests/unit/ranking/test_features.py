"""The feature registry's pure part: one row per candidate, columns in NAMES order."""

import math

import numpy as np
import pytest

from ranking.features import NAMES, Candidate, CollectionRates, ImageFacts, feature_matrix, smoothed

COLUMN = {name: i for i, name in enumerate(NAMES)}


def row(candidate, facts=None, depth=50, ctr=0.1):
    return feature_matrix([candidate], facts or {}, depth, CollectionRates(ctr=ctr))[0]


def test_names_are_unique_and_match_the_columns():
    assert len(NAMES) == len(set(NAMES))
    assert row(Candidate(1, 0.5, 1, {"clip": 1})).shape == (len(NAMES),)


def test_channel_ranks_and_missing_channels():
    features = row(Candidate(7, 0.8, 3, {"clip": 5, "fts": 1}, clip_cosine=0.31), depth=50)
    assert features[COLUMN["clip_cosine"]] == pytest.approx(0.31)
    assert features[COLUMN["clip_rank_log"]] == pytest.approx(math.log1p(5))
    assert features[COLUMN["fts_rank_log"]] == pytest.approx(math.log1p(1))
    assert features[COLUMN["caption_rank_log"]] == pytest.approx(math.log1p(51))  # not found: depth + 1
    assert features[COLUMN["first_stage_rank_log"]] == pytest.approx(math.log1p(3))


def test_priors_are_smoothed_toward_the_collection_and_need_evidence():
    unseen = row(Candidate(1, 0.5, 1, {"clip": 1}), {1: ImageFacts(640, 480, 0.2)}, ctr=0.1)
    assert unseen[COLUMN["ctr_debiased"]] == pytest.approx(0.1) and unseen[COLUMN["rating"]] == pytest.approx(0.5)
    assert unseen[COLUMN["aspect_log"]] == pytest.approx(math.log(640 / 480))
    popular = ImageFacts(640, 480, 0.2, impressions=1000, examinations=400.0, clicks=200, ratings=50, mean_rating=0.9)
    seen = row(Candidate(1, 0.5, 1, {"clip": 1}), {1: popular}, ctr=0.1)
    assert (
        seen[COLUMN["ctr_debiased"]] == pytest.approx(smoothed(200, 400, 0.1)) and seen[COLUMN["ctr_debiased"]] > 0.45
    )
    assert seen[COLUMN["rating"]] == pytest.approx((0.9 * 50 + 20 * 0.5) / 70)
    assert seen[COLUMN["impressions_log"]] == pytest.approx(math.log1p(1000))


def test_a_query_with_no_history_carries_no_signal_in_its_click_rate():
    """An unseen string: the same value for a popular and an unknown image (not the image's own rate)."""
    popular = ImageFacts(10, 10, 0.2, impressions=100, examinations=50.0, clicks=25)
    unknown = ImageFacts(10, 10, 0.2)
    features = [row(Candidate(1, 0.5, 1, {"clip": 1}), {1: facts}, ctr=0.1) for facts in (popular, unknown)]
    assert features[0][COLUMN["ctr_debiased"]] > features[1][COLUMN["ctr_debiased"]]
    assert features[0][COLUMN["query_ctr"]] == features[1][COLUMN["query_ctr"]] == pytest.approx(0.1)
    repeated = ImageFacts(
        10,
        10,
        0.2,
        impressions=100,
        examinations=50.0,
        clicks=25,
        query_impressions=30,
        query_examinations=30.0,
        query_clicks=30,
    )
    assert row(Candidate(1, 0.5, 1, {"clip": 1}), {1: repeated})[COLUMN["query_ctr"]] > 0.6


def test_the_feedback_channel_features(settings):
    """Its rank and score when it found the image; when not, a rank that the candidate depth does not move, so a
    reranked search (depth 100) and a plain first page (depth 25) log the same row for the same image."""
    settings.LOUPE_FEEDBACK_CHANNEL_DEPTH = 50
    found = row(Candidate(7, 0.8, 3, {"clip": 5, "feedback": 2}, 0.31, feedback_score=0.42))
    assert found[COLUMN["feedback_rank_log"]] == pytest.approx(math.log1p(2))
    assert found[COLUMN["feedback_score"]] == pytest.approx(0.42)
    shallow, deep = (row(Candidate(7, 0.8, 3, {"clip": 5}, 0.31), depth=d) for d in (25, 100))
    assert shallow[COLUMN["feedback_rank_log"]] == deep[COLUMN["feedback_rank_log"]] == pytest.approx(math.log1p(51))
    assert shallow[COLUMN["feedback_score"]] == 0.0


def test_the_taste_columns_are_neutral_without_history_and_need_more_than_one_click():
    candidate = Candidate(1, 0.5, 1, {"clip": 1})
    shared = row(candidate, {1: ImageFacts(width=4, height=3, clip_cosine=0.3)})
    assert shared[COLUMN["taste_similarity"]] == 0.0 and shared[COLUMN["taste_tags"]] == 0.0
    one_click = ImageFacts(width=4, height=3, clip_cosine=0.3, taste_cosine=1.0, taste_tag_weight=1.0, taste_weight=1.0)
    ten_clicks = ImageFacts(
        width=4, height=3, clip_cosine=0.3, taste_cosine=1.0, taste_tag_weight=10.0, taste_weight=10.0
    )
    once, often = row(candidate, {1: one_click}), row(candidate, {1: ten_clicks})
    assert once[COLUMN["taste_similarity"]] == pytest.approx(1 / 6)  # shrunk by 5 pseudo-choices
    assert once[COLUMN["taste_tags"]] == pytest.approx(1 / 6)
    assert often[COLUMN["taste_tags"]] == pytest.approx(10 / 15)
    assert np.array_equal(np.delete(once, [COLUMN["taste_similarity"], COLUMN["taste_tags"]]),
                          np.delete(shared, [COLUMN["taste_similarity"], COLUMN["taste_tags"]]))  # fmt: skip
