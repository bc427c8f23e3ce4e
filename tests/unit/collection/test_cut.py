import pytest

from collection.cut import cut_length

SCORES = [0.31, 0.30, 0.29, 0.18, 0.17, 0.05]


def test_no_cut_by_default():
    assert cut_length(SCORES) == len(SCORES)


def test_fixed_minimum_score():
    assert cut_length(SCORES, min_score=0.175) == 4
    assert cut_length(SCORES, min_score=0.5) == 0


def test_dynamic_cut_at_a_large_relative_drop():
    # 0.29 -> 0.18 is a 38% drop: the list stops before 0.18.
    assert cut_length(SCORES, max_relative_drop=0.3) == 3
    # A stricter threshold tolerates that drop but not 0.17 -> 0.05 (71%).
    assert cut_length(SCORES, max_relative_drop=0.5) == 5


def test_both_cuts_combine_and_the_earlier_wins():
    assert cut_length(SCORES, min_score=0.3, max_relative_drop=0.3) == 2


def test_min_keep_protects_the_head_from_the_dynamic_cut():
    assert cut_length([0.9, 0.1, 0.01], max_relative_drop=0.5) == 1
    assert cut_length([0.9, 0.1, 0.01], max_relative_drop=0.5, min_keep=2) == 2


def test_bad_drop_is_refused():
    with pytest.raises(ValueError):
        cut_length(SCORES, max_relative_drop=1.0)
