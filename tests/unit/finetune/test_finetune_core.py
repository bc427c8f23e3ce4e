"""The contrastive loss on known cases, WiSE-FT interpolation and alpha choice, projection fine-tuning."""

import math

import numpy as np
import pytest
import torch

from ranking.finetune.contrastive import info_nce
from ranking.finetune.heads import TextStates, TowerHeads
from ranking.finetune.training import (
    Anchor,
    PairSet,
    ReferenceGuard,
    collection_vectors,
    fine_tune_heads,
    hit_rate_at_k,
    pairs_recall,
    recall_of_pairs,
)
from ranking.finetune.wise import choose_alpha, interpolate


def test_info_nce_of_two_orthogonal_pairs_by_hand():
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # Each row's logits are (s, 0) for its own pair: cross-entropy log(1 + e^-s) in both directions.
    scale = 2.0
    expected = math.log(1 + math.exp(-scale))
    assert float(info_nce(text, image, scale)) == pytest.approx(expected, rel=1e-6)
    # Swapped images: every text prefers the wrong image: log(1 + e^s).
    assert float(info_nce(text, image.flip(0), scale)) == pytest.approx(math.log(1 + math.exp(scale)), rel=1e-6)


def test_info_nce_weights_and_extra_negatives():
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    image = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # the second pair is wrong
    good_first = float(info_nce(text, image, 5.0, weights=torch.tensor([1.0, 0.0])))
    good_second = float(info_nce(text, image, 5.0, weights=torch.tensor([0.0, 1.0])))
    assert good_first < good_second  # weight moves the loss toward the weighted pair
    plain = float(info_nce(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]]), 5.0))
    hard = float(
        info_nce(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]]), 5.0, negatives=torch.tensor([[0.9, 0.1]]))
    )
    assert plain == pytest.approx(0.0, abs=1e-6)  # one pair: nothing to confuse it with
    # The skipped image adds a second column on the text side only: log(1 + e^(s*(cos - 1))) / 2.
    cos = 0.9 / math.hypot(0.9, 0.1)
    assert hard == pytest.approx(math.log(1 + math.exp(5.0 * (cos - 1))) / 2, rel=1e-5)


def test_interpolate_is_linear_and_checks_shapes():
    start = {"w": torch.zeros(2, 2), "steps": torch.tensor(3)}
    tuned = {"w": torch.ones(2, 2), "steps": torch.tensor(9)}
    mid = interpolate(start, tuned, 0.25)
    assert torch.allclose(mid["w"], torch.full((2, 2), 0.25)) and int(mid["steps"]) == 3  # integers are kept
    assert torch.equal(interpolate(start, tuned, 0.0)["w"], start["w"])
    assert torch.equal(interpolate(start, tuned, 1.0)["w"], tuned["w"])
    with pytest.raises(ValueError):
        interpolate(start, {"w": torch.ones(3, 2), "steps": torch.tensor(1)}, 0.5)
    with pytest.raises(ValueError):
        interpolate(start, tuned, 1.5)


def test_choose_alpha_respects_the_reference_floor():
    # Held-out improves with alpha; the reference set degrades past 0.5.
    alpha, table = choose_alpha(lambda a: (a, 1.0 - max(0.0, a - 0.5)), reference_floor=0.8)
    assert alpha == pytest.approx(0.7) and len(table) == 11
    alpha, _ = choose_alpha(lambda a: (a, 0.0 if a > 0 else 1.0), reference_floor=0.9)
    assert alpha == 0.0  # every change hurts the reference: keep the old weights


def test_hit_rate_at_k_and_of_pairs():
    text = np.array([[1.0, 0.0], [0.0, 1.0]])
    images = np.array([[1.0, 0.0], [0.7, 0.7], [0.0, 1.0]])
    assert hit_rate_at_k(text, images, [{0}, {0}], k=1) == 0.5
    assert hit_rate_at_k(text, images, [{0}, {0}], k=3) == 1.0
    # Per pair: query 0 chose images 0 and 2 (only 0 is its nearest), query 1 chose image 2 (its nearest).
    pairs = PairSet(np.array([0, 0, 1]), np.array([0, 2, 2]), np.ones(3))
    assert recall_of_pairs(pairs, text, images, k=1) == pytest.approx(2 / 3)


@pytest.fixture(scope="module")
def tiny_model():
    from django.conf import settings

    from collection.encoders import Encoder

    return Encoder(str(settings.LOUPE_CLIP_MODEL), local_files_only=True).model


def synthetic_task(seed: int, n_images=400, hidden=32, n_queries=80):
    """Queries' pooled text relate to their images' pooled outputs through a map the start projections miss."""
    rng = np.random.default_rng(seed)
    image_pooled = rng.normal(size=(n_images, hidden)).astype(np.float32)
    mixing = rng.normal(size=(hidden, hidden)).astype(np.float32)
    targets = rng.choice(n_images, size=n_queries, replace=False)
    text_pooled = (image_pooled[targets] @ mixing + 0.3 * rng.normal(size=(n_queries, hidden))).astype(np.float32)
    return torch.from_numpy(image_pooled), TextStates(torch.from_numpy(text_pooled)), targets


def test_fine_tuning_raises_recall_on_pairs_that_neither_trained_nor_stopped_it(tiny_model):
    """Measured on held-out pairs: their queries and images are in neither the training nor the early-stopping
    pairs, so the gain cannot come from remembering them or from the epoch having been picked on them."""
    images, queries, targets = synthetic_task(0, n_queries=100)
    heads = TowerHeads(tiny_model, 0)
    rows = np.arange(len(targets))
    train = PairSet(rows[:60], targets[:60], np.ones(60))
    early_stopping = PairSet(rows[60:80], targets[60:80], np.ones(20))
    held_out = PairSet(rows[80:], targets[80:], np.ones(20))
    chosen_on = set(train.query_rows) | set(early_stopping.query_rows)
    assert not set(held_out.query_rows) & chosen_on
    assert not set(held_out.image_rows) & (set(train.image_rows) | set(early_stopping.image_rows))
    before = pairs_recall(heads, held_out, queries, images)
    result = fine_tune_heads(
        heads,
        train,
        early_stopping,
        queries,
        images,
        logit_scale=10.0,
        learning_rate=0.01,
        epochs=60,
        batch_size=32,
        patience=15,
        negatives=64,
    )
    heads.load_model_state(result.state)
    after = pairs_recall(heads, held_out, queries, images)
    assert after >= before + 0.2, (before, after)
    # The history records the early-stopping set's score under its own name, not as a held-out figure.
    kept = result.history[result.best_epoch]
    assert "held_out_recall@10" not in kept
    assert kept["validation_recall@10"] == pytest.approx(pairs_recall(heads, early_stopping, queries, images))
    assert not torch.equal(result.state["text_projection.weight"], tiny_model.text_projection.weight)


def test_early_stopping_keeps_the_start_when_nothing_helps_and_without_it_the_last_epoch(tiny_model):
    images, queries, targets = synthetic_task(1)
    rng = np.random.default_rng(2)
    rows = np.arange(len(targets))
    train = PairSet(rows[:60], rng.choice(len(images), size=60), np.ones(60))  # pure noise
    early_stopping = PairSet(rows[60:], targets[60:], np.ones(20))
    heads = TowerHeads(tiny_model, 0)
    before = pairs_recall(heads, early_stopping, queries, images)
    kept = fine_tune_heads(
        heads,
        train,
        early_stopping,
        queries,
        images,
        logit_scale=10.0,
        learning_rate=0.01,
        epochs=20,
        batch_size=32,
        patience=3,
    )
    heads.load_model_state(kept.state)
    assert (
        pairs_recall(heads, early_stopping, queries, images) >= before
    )  # never worse than the start, on the set that stopped it
    last = fine_tune_heads(
        TowerHeads(tiny_model, 0),
        train,
        early_stopping,
        queries,
        images,
        logit_scale=10.0,
        learning_rate=0.01,
        epochs=5,
        batch_size=32,
        early_stopping=False,
    )
    assert last.best_epoch == 5 and len(last.history) == 6  # kept the last epoch, whatever it scored


def test_the_reference_guard_keeps_only_epochs_that_hold_the_floor(tiny_model):
    images, queries, targets = synthetic_task(0)
    rows = np.arange(len(targets))
    train = PairSet(rows[:60], targets[:60], np.ones(60))
    early_stopping = PairSet(rows[60:], targets[60:], np.ones(20))
    options = {"logit_scale": 10.0, "learning_rate": 0.01, "epochs": 12, "batch_size": 32, "patience": 12}
    # A reference score that falls with every epoch: only epochs 0-3 hold the floor.
    epochs_seen = []

    def score(heads, vectors):
        epochs_seen.append(len(epochs_seen))
        return 1.0 - 0.1 * epochs_seen[-1]

    guarded = fine_tune_heads(
        TowerHeads(tiny_model, 0),
        train,
        early_stopping,
        queries,
        images,
        guard=ReferenceGuard(score, floor=0.7),
        **options,
    )
    assert guarded.best_epoch <= 3
    assert [h["reference"] for h in guarded.history][:4] == pytest.approx([1.0, 0.9, 0.8, 0.7])
    free = fine_tune_heads(TowerHeads(tiny_model, 0), train, early_stopping, queries, images, **options)
    assert free.best_epoch > 3  # the same run without the guard goes on improving past epoch 3
    assert (
        free.history[free.best_epoch]["validation_recall@10"]
        > guarded.history[guarded.best_epoch]["validation_recall@10"]
    )


def test_the_anchor_keeps_what_feedback_is_not_about_in_place(tiny_model):
    images, queries, targets = synthetic_task(3)
    rows = np.arange(len(targets))
    train = PairSet(rows[:60], targets[:60], np.ones(60))
    early_stopping = PairSet(rows[60:], targets[60:], np.ones(20))
    untouched = np.setdiff1d(np.arange(len(images)), targets)  # images no pair is about

    def drift(anchor_weight: float) -> float:
        heads = TowerHeads(tiny_model, 0)
        start = collection_vectors(heads, images)
        anchor = Anchor(start, weight=anchor_weight) if anchor_weight else None
        result = fine_tune_heads(
            heads,
            train,
            early_stopping,
            queries,
            images,
            logit_scale=10.0,
            learning_rate=0.01,
            epochs=15,
            batch_size=32,
            early_stopping=False,
            anchor=anchor,
        )
        heads.load_model_state(result.state)
        moved = (collection_vectors(heads, images) * start).sum(-1)[untouched]
        return float(1 - moved.mean())

    free, anchored = drift(0.0), drift(10.0)
    assert anchored < free / 2, (anchored, free)


def estimate(before: float, after: float, lower: float | None = 0.01, searches: int = 500):
    from ranking.finetune.counterfactual import ESTIMATOR, GateEstimate

    return GateEstimate(ESTIMATOR, before, after, after - before, lower, searches, 100, 10, "swap slice", 10.0)


def test_the_encoder_gate_both_ways():
    from ranking.finetune.service import FineTuneSettings, encoder_gate

    options = FineTuneSettings(margin=0.1, tolerance=0.02)
    assert encoder_gate(estimate(0.30, 0.45), 0.60, 0.59, options)[0]  # +50% clicks, -0.01 reference: promote
    passed, why = encoder_gate(estimate(0.30, 0.55), 0.60, 0.50, options)  # big gain but the reference regresses
    assert not passed and "reference" in why and "clicks" not in why
    passed, why = encoder_gate(estimate(0.30, 0.32), 0.60, 0.61, options)  # reference fine, gain under 10%
    assert not passed and "do not rise by 10%" in why
    passed, why = encoder_gate(estimate(0.30, 0.40, lower=-0.002), 0.60, 0.61, options)  # gain within the noise
    assert not passed and "lower bound -0.0020 is not above 0 (500 searches)" in why
    passed, why = encoder_gate(estimate(0.30, 0.40, lower=None, searches=1), 0.60, 0.61, options)
    assert not passed and "lower bound" in why
    passed, why = encoder_gate(estimate(0.30, 0.30), 0.60, 0.40, options)
    assert not passed and "clicks" in why and "reference" in why


def test_the_anchor_reads_only_its_rows(tiny_model):
    """The service anchors every image but the guard and gate images (audit of h4, finding 4): the anchor's loss
    never reads an image outside ``Anchor.rows`` (those are NaN here: one read would make the loss NaN)."""
    from ranking.finetune.training import _anchor_loss

    images, _, _ = synthetic_task(3)
    heads = TowerHeads(tiny_model, 0)
    start = collection_vectors(heads, images)
    anchored = torch.arange(0, len(images), 2)
    poisoned = images.clone()
    poisoned[1::2] = float("nan")
    anchor = Anchor(start[anchored], rows=anchored, images_per_step=len(images))
    with torch.no_grad():
        loss = _anchor_loss(heads, anchor, poisoned, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and float(loss) < 1e-5  # the start's own vectors: no drift yet


def test_the_anchor_never_holds_a_guard_or_gate_image():
    from ranking.finetune.reference import CaptionSet, ReferenceOverlap, ReferenceSplit, anchor_rows, check_anchor_rows

    image_row = {100 + n: n for n in range(6)}
    split = ReferenceSplit(
        CaptionSet([], []), CaptionSet([], []), [], {"guard": {100, 101}, "gate": {102}, "anchor": {103}}
    )
    assert list(anchor_rows(image_row, split)) == [3, 4, 5]
    with pytest.raises(ReferenceOverlap, match="gate image"):
        check_anchor_rows(np.asarray([2, 3]), image_row, split)
    with pytest.raises(ReferenceOverlap, match="guard image"):
        check_anchor_rows(np.arange(6), image_row, split)
