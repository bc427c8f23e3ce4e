"""Reciprocal-rank and convex score fusion on known cases."""

import pytest

from collection.fusion import convex_fusion, reciprocal_rank_fusion


def ids(fused):
    return [c.image_id for c in fused]


def test_an_image_found_by_both_channels_beats_one_found_by_one():
    fused = reciprocal_rank_fusion({"clip": [1, 2, 3], "text": [3, 4]}, {"clip": 1, "text": 1}, k=60)
    # 3: (1/63 + 1/61)/2; 1: (1/61)/2; 2 and 4 tie at (1/62)/2, and 2 is in the first channel.
    assert ids(fused) == [3, 1, 2, 4]
    assert fused[0].ranks == {"clip": 3, "text": 1} and fused[0].channels == ["clip", "text"]


def test_scores_are_scaled_so_first_everywhere_is_one():
    fused = reciprocal_rank_fusion({"clip": [7], "text": [7]}, {"clip": 1, "text": 2})
    assert fused[0].score == pytest.approx(1.0)


def test_a_zero_weight_channel_changes_nothing():
    clip_only = reciprocal_rank_fusion({"clip": [1, 2, 3]}, {"clip": 1})
    with_noise = reciprocal_rank_fusion({"clip": [1, 2, 3], "noise": [3, 2, 1, 9]}, {"clip": 1, "noise": 0})
    assert ids(with_noise)[:3] == ids(clip_only)
    assert [c.score for c in with_noise[:3]] == pytest.approx([c.score for c in clip_only])


def test_images_without_text_are_judged_by_clip_alone():
    # Image 2 has no text: the text channel could never find it, so it is not averaged with a 0.
    has_text = {1: True, 2: False}
    fused = reciprocal_rank_fusion(
        {"clip": [2, 1], "text": [1]},
        {"clip": 1, "text": 1},
        eligible=lambda channel, image_id: channel == "clip" or has_text[image_id],
    )
    scores = {c.image_id: c.score for c in fused}
    assert scores[2] == pytest.approx(1.0)  # first in the only channel that could see it
    assert scores[1] == pytest.approx((1 / 62 + 1 / 61) / 2 * 61)
    assert ids(fused) == [2, 1]


def test_weights_shift_the_order():
    rankings = {"clip": [1, 2], "text": [2, 1]}
    assert ids(reciprocal_rank_fusion(rankings, {"clip": 3, "text": 1}))[0] == 1
    assert ids(reciprocal_rank_fusion(rankings, {"clip": 1, "text": 3}))[0] == 2


def test_ties_follow_the_first_channel():
    assert ids(reciprocal_rank_fusion({"clip": [5, 4], "text": [4, 5]}, {"clip": 1, "text": 1})) == [5, 4]


# Convex fusion of min-max normalised scores (Bruch, Gai & Ingber 2023).


def test_convex_fusion_uses_the_score_gap_that_ranks_throw_away():
    # CLIP is confident about 1 (0.9 against 0.2 and 0.1); full text barely prefers 2 over 1. RRF sees two
    # first places and ties them (broken by CLIP's order); the convex fusion ranks 1 far ahead.
    clip = [(1, 0.9), (2, 0.2), (3, 0.1)]
    fts = [(2, 0.51), (1, 0.50), (3, 0.0)]
    fused = convex_fusion({"clip": clip, "fts": fts}, {"clip": 0.5, "fts": 0.5})
    assert [c.image_id for c in fused] == [1, 2, 3]
    # Each list's scores over its best (floored at 0).
    assert fused[0].score == pytest.approx(0.5 * 1.0 + 0.5 * (0.50 / 0.51))
    assert fused[1].score == pytest.approx(0.5 * (0.2 / 0.9) + 0.5 * 1.0)


def test_convex_fusion_judges_images_without_text_by_clip_alone():
    clip = [(1, 0.9), (2, 0.5), (3, 0.1)]
    fts = [(3, 2.0), (2, 0.0)]
    has_text = {2, 3}
    fused = convex_fusion(
        {"clip": clip, "fts": fts},
        {"clip": 0.5, "fts": 0.5},
        eligible=lambda channel, image_id: channel == "clip" or image_id in has_text,
    )
    by_id = {c.image_id: c.score for c in fused}
    assert by_id[1] == pytest.approx(1.0)  # no text: CLIP's normalised score alone, not halved
    assert by_id[2] == pytest.approx(0.5 * (0.5 / 0.9))  # has text, scored 0 by it


def test_convex_fusion_with_one_weighted_channel_keeps_its_order():
    clip = [(5, 0.3), (4, 0.2), (9, 0.1)]
    fts = [(9, 3.0), (4, 1.0)]
    fused = convex_fusion({"clip": clip, "fts": fts}, {"clip": 1.0, "fts": 0.0})
    assert [c.image_id for c in fused][:3] == [5, 4, 9]


def test_a_list_of_equal_scores_normalises_to_one():
    fused = convex_fusion({"fts": [(1, 0.4), (2, 0.4)]}, {"fts": 1.0})
    assert [c.score for c in fused] == [1.0, 1.0]


def test_negative_scores_count_as_no_match():
    fused = convex_fusion({"clip": [(1, 0.5), (2, -0.3)]}, {"clip": 1.0})
    assert [(c.image_id, c.score) for c in fused] == [(1, 1.0), (2, 0.0)]
