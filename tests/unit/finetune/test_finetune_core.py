"""The contrastive loss on known cases, WiSE-FT interpolation and alpha choice, projection fine-tuning."""

import math

import numpy as np
import pytest
import torch

from ranking.finetune.contrastive import info_nce
from ranking.finetune.projections import PairSet, Projections, fine_tune_projections, held_out_recall, recall_at_k
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


def test_recall_at_k():
    text = np.array([[1.0, 0.0], [0.0, 1.0]])
    images = np.array([[1.0, 0.0], [0.7, 0.7], [0.0, 1.0]])
    assert recall_at_k(text, images, [{0}, {0}], k=1) == 0.5
    assert recall_at_k(text, images, [{0}, {0}], k=3) == 1.0


def synthetic_task(seed: int, n_images=400, hidden=24, dim=16, n_queries=80):
    """Queries' pooled text relate to their images' pooled outputs through a map the start projections miss."""
    rng = np.random.default_rng(seed)
    image_pooled = rng.normal(size=(n_images, hidden)).astype(np.float32)
    mixing = rng.normal(size=(hidden, hidden)).astype(np.float32)
    targets = rng.choice(n_images, size=n_queries, replace=False)
    text_pooled = (image_pooled[targets] @ mixing + 0.3 * rng.normal(size=(n_queries, hidden))).astype(np.float32)
    start = Projections(torch.tensor(rng.normal(size=(dim, hidden)), dtype=torch.float32),
                        torch.tensor(rng.normal(size=(dim, hidden)), dtype=torch.float32))  # fmt: skip
    return image_pooled, text_pooled, targets, start


def test_fine_tuning_the_projections_raises_held_out_recall():
    image_pooled, text_pooled, targets, start = synthetic_task(0)
    queries = np.arange(len(targets))
    train = PairSet(text_pooled, queries[:60], targets[:60], np.ones(60))
    valid = PairSet(text_pooled, queries[60:], targets[60:], np.ones(20))
    before = held_out_recall(valid, image_pooled, start)
    result = fine_tune_projections(train, valid, image_pooled, start, logit_scale=10.0, learning_rate=0.01,
                                   epochs=60, batch_size=32, patience=15)  # fmt: skip
    after = held_out_recall(valid, image_pooled, result.projections)
    assert after >= before + 0.2, (before, after)
    assert result.history[result.best_epoch]["held_out_recall@10"] == pytest.approx(after)
    assert not torch.equal(result.projections.text, start.text)


def test_early_stopping_keeps_the_start_when_nothing_helps():
    image_pooled, text_pooled, targets, start = synthetic_task(1)
    rng = np.random.default_rng(2)
    queries = np.arange(len(targets))
    noise = rng.choice(len(image_pooled), size=60)  # pairs that are pure noise
    train = PairSet(text_pooled, queries[:60], noise, np.ones(60))
    valid = PairSet(text_pooled, queries[60:], targets[60:], np.ones(20))
    before = held_out_recall(valid, image_pooled, start)
    result = fine_tune_projections(train, valid, image_pooled, start, logit_scale=10.0, learning_rate=0.01,
                                   epochs=40, batch_size=32, patience=3)  # fmt: skip
    assert held_out_recall(valid, image_pooled, result.projections) >= before  # never worse than the start


def test_the_encoder_gate_both_ways():
    from ranking.finetune.service import FineTuneSettings, encoder_gate

    options = FineTuneSettings(margin=0.1, tolerance=0.02)
    assert encoder_gate(0.30, 0.45, 0.60, 0.59, options)[0]  # +0.15 held out, -0.01 reference: promote
    refused, why = encoder_gate(0.30, 0.55, 0.60, 0.50, options)  # big gain but the reference regresses
    assert not refused and "reference" in why and "held-out" not in why
    refused, why = encoder_gate(0.30, 0.35, 0.60, 0.61, options)  # reference fine, gain too small
    assert not refused and "does not rise by 0.1" in why
    refused, why = encoder_gate(0.30, 0.30, 0.60, 0.40, options)
    assert not refused and "held-out" in why and "reference" in why
