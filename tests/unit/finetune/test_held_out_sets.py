"""The fine-tune's sets that choose (training, validation, guard captions) never share a pair or an image with
the sets that judge (test pairs, gate captions): an overlap raises before anything trains."""

from datetime import UTC, datetime

import pytest

from ranking.finetune.pairs import Pair, PairWindows, WindowOverlap, assert_disjoint
from ranking.finetune.reference import CaptionSet, ReferenceOverlap, ReferenceSplit, part_of

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def windows(train, validation, test) -> PairWindows:
    def pairs(keys):
        return [Pair(query, image_id, 1.0) for query, image_id in keys]

    return PairWindows(pairs(train), pairs(validation), pairs(test), (None, None, NOW))


def test_disjoint_windows_pass_and_a_shared_pair_raises_naming_it():
    assert_disjoint(windows([("red", 1)], [("red", 2)], [("blue", 1)]))  # a query or an image may recur
    with pytest.raises(WindowOverlap, match=r"training and the test window, e.g. \('red', image 1\)"):
        assert_disjoint(windows([("red", 1)], [("red", 2)], [("red", 1)]))
    with pytest.raises(WindowOverlap, match="validation and the test"):
        assert_disjoint(windows([("red", 1)], [("red", 2)], [("red", 2), ("blue", 3)]))
    with pytest.raises(WindowOverlap, match="training and the validation"):
        assert_disjoint(windows([("red", 1)], [("red", 1)], []))


def split(guard: set[int], gate: set[int], anchor: set[int]) -> ReferenceSplit:
    return ReferenceSplit(CaptionSet([], []), CaptionSet([], []), [], {"guard": guard, "gate": gate, "anchor": anchor})


def test_a_reference_image_in_two_parts_raises():
    split({1, 2}, {3}, {4}).check()
    with pytest.raises(ReferenceOverlap, match="guard and the gate"):
        split({1, 2}, {2, 3}, {4}).check()
    with pytest.raises(ReferenceOverlap, match="gate and the anchor"):
        split({1}, {3}, {3, 4}).check()


def test_images_split_about_three_eighths_guard_three_eighths_gate_a_quarter_anchor():
    parts = [part_of(image_id) for image_id in range(4000)]
    shares = {name: parts.count(name) / len(parts) for name in ("guard", "gate", "anchor")}
    assert shares["guard"] == pytest.approx(0.375, abs=0.03) and shares["gate"] == pytest.approx(0.375, abs=0.03)
    assert shares["anchor"] == pytest.approx(0.25, abs=0.03)
    assert [part_of(i) for i in range(50)] == parts[:50]  # stable: the same image, the same part, every run
